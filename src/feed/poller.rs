//! The poll loop of one feed: poll, diff, encode, publish, sleep; back off
//! while the upstream fails; stop after the last subscriber plus linger.
//!
//! This module owns running the polls at the times [`super::cadence`] says,
//! and the transitions between healthy and stale. It is the only writer of
//! its feed's items and sequence numbers.
//! A failed poll must never change the item list: no `removed` events come
//! from an upstream outage.
//!
//! Also here: refresh polls come at most once per [`refresh_gap`]; a feed
//! whose subscribers all left before it published a good poll to one of
//! them ends at once (no linger); a body that would not fit the memory
//! budget (`crate::budget`) counts as a failed poll.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap};
use tracing::field::Empty;
use tracing::Instrument;

use super::cadence::Cadence;
use super::contract;
use super::extract::{ItemList, Skipped};
use super::update::{prepare, Update};
use super::Feed;
use crate::budget::Charge;
use crate::config::{AuthMode, FeedConfig};
use crate::metrics::PollOutcome;
use crate::trace;
use crate::upstream::{PollError, Polled, UpstreamError, Validators};

mod seams;
pub(crate) use seams::{Good, NoStragglers, Outlet, PollCtx, PollKit, Published, Resume, Status};
pub use seams::{StragglerRecord, StragglerSink};

/// How long a refresh request waits for more of its kind before polling.
pub(crate) const REFRESH_DEBOUNCE: Duration = Duration::from_millis(5);

/// The longest gap [`refresh_gap`] imposes between two refresh polls.
pub(crate) const REFRESH_GAP_MAX: Duration = Duration::from_secs(1);

/// At most one poll per this long is made for refreshes (the refresh
/// endpoint, write-through) of one feed: `min(interval, 1s)`. Refreshes in
/// between are coalesced into one poll at the end of the gap, so none is
/// lost and a flood of them costs the upstream a bounded number of polls.
pub(crate) fn refresh_gap(def: &FeedConfig) -> Duration {
    def.interval.min(REFRESH_GAP_MAX)
}

/// Run until the feed is idle past its linger, or shutdown. `charge` is the
/// feed's share of the memory budget, resized to what each good poll keeps.
///
/// Each turn is named after the moment it runs: [`PollLoop::still_wanted`]
/// (before a poll), [`PollLoop::poll_once`], then [`PollLoop::on_success`]
/// or [`PollLoop::on_failure`], then [`PollLoop::wait`] for the next turn.
/// Returns the charge, for an engine that runs the loop again later.
pub(crate) async fn run(feed: Arc<Feed>, ctx: PollCtx, charge: Charge) -> Charge {
    let mut l = PollLoop::new(feed, ctx, charge);
    loop {
        // Stopped by its owner (shutdown, or an engine taking the feed back).
        if l.ctx.shutdown.is_cancelled() || !l.still_wanted() {
            break;
        }
        if l.feed.is_finished() {
            // Nothing changes any more: no polls, only wait to be dropped.
            if l.wait_finished().await {
                continue;
            }
            break;
        }
        // Each poll is the root of its own trace; its phases are children.
        let span = tracing::info_span!(
            target: trace::TARGET,
            parent: None,
            "poll",
            "pollcast.feed" = %l.def.name,
            "http.route" = %l.def.poll,
            "otel.status_code" = Empty,
            "otel.status_description" = Empty,
        );
        let polled = l.poll_once().instrument(span.clone()).await;
        let delay = match polled {
            Ok(update) => l.on_success(update).instrument(span.clone()).await,
            Err(failure) => l.on_failure(failure).instrument(span.clone()).await,
        };
        drop(span);
        if !l.wait(delay).await {
            break;
        }
    }
    tracing::debug!(feed = %l.feed.label(), "feed stopped");
    // Subscribers still here (shutdown, retirement) look again and leave.
    l.feed.wake();
    l.charge
}

/// Why a poll failed, and how long the upstream asked us to wait.
struct Failure {
    reason: String,
    retry_after: Option<Duration>,
}

/// What a good poll found: `None` when the body did not change.
struct Success {
    update: Option<Update>,
    fresh_for: Option<Duration>,
}

/// The state one feed's poll loop carries from turn to turn.
struct PollLoop {
    feed: Arc<Feed>,
    ctx: PollCtx,
    def: Arc<FeedConfig>,
    charge: Charge,
    /// The upstream request: path with the feed's query, and its credentials.
    path: String,
    headers: HeaderMap,
    /// Withdraws this feed's answer to stragglers however the loop ends.
    stragglers: Box<dyn StragglerRecord>,
    prev: Option<(Bytes, Arc<ItemList>)>,
    validators: Validators,
    failures: u32,
    skipped: Skipped,
    stale_since: SystemTime,
    idle_since: Option<Instant>,
    cadence: Cadence,
    /// When the last refresh poll began (see `refresh_gap`).
    last_refresh: Option<tokio::time::Instant>,
    /// A good poll was published while someone listened. Until then, a feed
    /// nobody listens to ends at once instead of lingering: a client cannot
    /// park feeds by opening streams and leaving before they deliver.
    served: bool,
    /// Woken by `Subscription`'s drop when the last subscriber leaves.
    changes: tokio::sync::watch::Receiver<u64>,
}

impl PollLoop {
    fn new(feed: Arc<Feed>, mut ctx: PollCtx, charge: Charge) -> Self {
        let def = feed.def.clone();
        let poll = feed.poll_path.clone();
        let path = if feed.key.query.is_empty() {
            poll.clone()
        } else {
            format!("{poll}?{}", feed.key.query)
        };
        let mut headers = HeaderMap::new();
        if let Some(v) = &feed.key.authorization {
            headers.insert(header::AUTHORIZATION, v.clone());
        }
        if let Some(v) = &feed.key.cookie {
            headers.insert(header::COOKIE, v.clone());
        }
        // `check` and `none` feeds are shared: they poll as pollcast itself.
        if def.auth != AuthMode::Forward {
            if let Some(secret) = &def.credentials {
                headers.insert(header::AUTHORIZATION, secret.header().clone());
            }
        }
        let stragglers = ctx.stragglers.straggler_recorder(&feed, &poll, &headers);
        let changes = feed.watch();
        let (prev, validators) = match ctx.resume.take() {
            Some(r) => (Some((r.body, r.list)), r.validators),
            None => (None, Validators::default()),
        };
        Self {
            cadence: Cadence::new(&def),
            feed,
            ctx,
            def,
            charge,
            path,
            headers,
            stragglers,
            prev,
            validators,
            failures: 0,
            skipped: Skipped::default(),
            stale_since: SystemTime::now(),
            idle_since: None,
            last_refresh: None,
            served: false,
            changes,
        }
    }

    /// Before a poll: `false` when nobody listens any more (at once if the
    /// feed never served anyone, else after the linger) and the feed ended.
    fn still_wanted(&mut self) -> bool {
        if self.feed.subscribers() > 0 {
            self.idle_since = None;
            return true;
        }
        let finished = self.feed.is_finished();
        if !finished && !self.served && (self.ctx.remove_if_idle)(&self.feed) {
            return false;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        !(since.elapsed() >= self.def.linger && (self.ctx.remove_if_idle)(&self.feed))
    }

    /// A finished feed polls no more; it waits to be dropped. `false` on shutdown.
    async fn wait_finished(&mut self) -> bool {
        let wait = self
            .def
            .linger
            .min(self.def.interval.max(Duration::from_millis(10)));
        tokio::select! {
            _ = self.ctx.shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    /// Poll the upstream once and prepare what the answer changes; counted
    /// in metrics and the status page whatever the outcome.
    async fn poll_once(&mut self) -> Result<Success, Failure> {
        let started = Instant::now();
        // Conditions only once there is a list a 304 can refer to.
        let conditions = self.prev.as_ref().and(Some(&self.validators));
        self.stragglers.polling(&self.feed);
        let request = tracing::info_span!(
            target: trace::TARGET,
            "request",
            "otel.kind" = "client",
            "http.request.method" = "GET",
            "http.route" = %self.def.poll,
            "http.response.status_code" = Empty,
        );
        let polled = self
            .ctx
            .upstream
            .poll(&self.path, self.headers.clone(), conditions)
            .instrument(request)
            .await;
        let took = started.elapsed();
        let bytes = polled.as_ref().map_or(0, |p| p.len() as u64);
        let fresh_for = polled.as_ref().ok().and_then(Polled::fresh_for);
        let next = self.cadence.longest_next(fresh_for);
        let (counted, outcome) = match polled {
            Ok(Polled::NotModified(_)) => {
                self.stragglers.confirmed(next);
                (PollOutcome::not_modified, Ok(None))
            }
            Ok(Polled::Body(body, v, head)) => {
                let kept = body.clone();
                match prepare(&self.def, &self.feed.render, self.prev.as_ref(), body) {
                    // Over the budget: a failed poll, the old list stays (no
                    // item looks removed); retried with the failure backoff.
                    Ok(Some(u)) if !self.charge.resize(u.retained()) => (
                        PollOutcome::over_budget,
                        Err(Failure {
                            reason: format!(
                                "keeping this body ({} bytes) would pass the feed memory budget ([limits] max_feed_memory = {} bytes)",
                                u.body_len(),
                                self.ctx.limits.budget().cap()
                            ),
                            retry_after: None,
                        }),
                    ),
                    Ok(update) => {
                        self.validators = v;
                        // Before publishing: a client that saw the event gets this body.
                        self.stragglers.body(kept, &head, next);
                        (PollOutcome::ok, Ok(update))
                    }
                    Err(e) => (
                        PollOutcome::invalid_body,
                        Err(Failure {
                            reason: e.to_string(),
                            retry_after: None,
                        }),
                    ),
                }
            }
            Err(e) => (
                outcome_of(&e),
                Err(Failure {
                    reason: e.to_string(),
                    retry_after: e.retry_after(),
                }),
            ),
        };
        self.ctx.metrics.poll(&self.def.name, counted, took, bytes);
        self.ctx
            .stats
            .record_poll(took, outcome.as_ref().err().map(|f| f.reason.as_str()));
        outcome.map(|update| Success { update, fresh_for })
    }

    /// After a good poll: tell recovery, publish the changes, end the feed
    /// on a terminal state. Returns the delay until the next poll.
    async fn on_success(&mut self, Success { update, fresh_for }: Success) -> Duration {
        let feed = &self.feed;
        // Recovery is told before the events that follow it. A feed taken
        // over stale (another replica's polls failed) recovers here too.
        if self.failures > 0 || feed.is_stale() {
            self.ctx.stats.record_events(1);
            tracing::info!(feed = %feed.label(), failures = self.failures, "upstream recovered");
            self.ctx
                .metrics
                .events(&self.def.name, contract::RECOVERED, 1);
            let body = feed.render.recovered(self.stale_since, self.failures);
            self.ctx.outlet.status(feed, Status::Recovered(body)).await;
        }
        self.failures = 0;
        let mut changed = false;
        if let Some(update) = update {
            changed = !update.is_first() && !update.is_empty();
            if update.skipped != self.skipped {
                // Told when the counts change, not on every poll.
                warn_skipped(feed, &update.skipped);
                self.skipped = update.skipped.clone();
            }
            self.ctx.stats.record_events(update.len());
            let end = update.terminal().cloned();
            let published = self
                .ctx
                .outlet
                .publish(Good {
                    feed,
                    update,
                    validators: &self.validators,
                    metrics: &self.ctx.metrics,
                })
                .await;
            if published.is_none() {
                // Refused: the owner of the loop ends it (its shutdown).
                return Duration::ZERO;
            }
            self.prev = published;
            self.served = self.served || feed.subscribers() > 0;
            if let Some(end) = end {
                // No more polls: nothing would keep the answer current.
                self.stragglers.withdraw();
                tracing::info!(feed = %feed.label(), "terminal state reached; streams end");
                feed.finish(end);
            }
        }
        let delay = self.cadence.succeeded(changed, fresh_for);
        self.delay(delay)
    }

    /// After a failed poll: the list stays as it was (no item looks
    /// removed); subscribers hear `stale` once. Returns the backoff delay.
    async fn on_failure(
        &mut self,
        Failure {
            reason,
            retry_after,
        }: Failure,
    ) -> Duration {
        let feed = &self.feed;
        let span = tracing::Span::current();
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", reason.as_str());
        self.stragglers.withdraw();
        if self.failures == 0 {
            self.stale_since = SystemTime::now();
            self.ctx.stats.record_events(1);
        }
        self.failures = self.failures.saturating_add(1);
        let failures = self.failures;
        if failures == 1 {
            self.ctx.metrics.events(&self.def.name, contract::STALE, 1);
        }
        // A long outage logs its 1st, 2nd, 4th, 8th... failure at warn
        // (the rest at debug): visible, without a line per poll.
        if loud(failures) {
            tracing::warn!(feed = %feed.label(), failures, %reason, "poll failed");
        } else {
            tracing::debug!(feed = %feed.label(), failures, %reason, "poll failed");
        }
        if !feed.is_stale() {
            let body = feed.render.stale(&reason, failures, self.stale_since);
            self.ctx.outlet.status(feed, Status::Stale(body)).await;
        }
        let delay = self.cadence.failed(failures, retry_after);
        self.delay(delay)
    }

    /// Record the delay the cadence chose; an idle feed wakes by its linger's end.
    fn delay(&mut self, delay: Duration) -> Duration {
        self.ctx.stats.record_delay(delay);
        self.ctx.metrics.poll_delay(&self.def.name, delay);
        match self.idle_since {
            Some(since) => delay.min(self.def.linger.saturating_sub(since.elapsed())),
            None => delay,
        }
    }

    /// Between polls: sleep `delay`, or less for a refresh request (debounced
    /// and at most one per `refresh_gap`). `false` when the loop must end.
    async fn wait(&mut self, delay: Duration) -> bool {
        let feed = &self.feed;
        let wake_at = tokio::time::Instant::now() + delay;
        let refreshed = loop {
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return false,
                _ = feed.retired() => return false,
                _ = tokio::time::sleep_until(wake_at) => break false,
                // Before it served anyone, the last subscriber leaving ends
                // the feed now, not at the next poll.
                r = self.changes.changed(), if !self.served => {
                    if r.is_err() || (feed.subscribers() == 0 && (self.ctx.remove_if_idle)(feed)) {
                        return false;
                    }
                }
                _ = feed.refresh_requested() => break true,
            }
        };
        if refreshed {
            // A burst of writes becomes one poll, and refresh polls come
            // at most once per gap; refreshes meanwhile wait for it.
            let now = tokio::time::Instant::now();
            let at = self
                .last_refresh
                .map_or(now, |t| t + refresh_gap(&self.def))
                .max(now + REFRESH_DEBOUNCE);
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return false,
                _ = feed.retired() => return false,
                _ = tokio::time::sleep_until(at) => {}
            }
            self.last_refresh = Some(tokio::time::Instant::now());
        }
        true
    }
}

/// The metrics outcome of a failed poll.
fn outcome_of(e: &PollError) -> PollOutcome {
    match e {
        PollError::Upstream(UpstreamError::Timeout(_)) => PollOutcome::timeout,
        PollError::Upstream(UpstreamError::Connect(_)) => PollOutcome::unreachable,
        PollError::Status(_) | PollError::RetryAfter(..) => PollOutcome::bad_status,
        PollError::TooLarge(_) => PollOutcome::too_large,
        _ => PollOutcome::error,
    }
}

/// Whether failure number `failures` of a run is logged at warn level.
fn loud(failures: u32) -> bool {
    failures.is_power_of_two()
}

fn warn_skipped(feed: &Feed, skipped: &Skipped) {
    if skipped.missing_id > 0 || skipped.duplicate_id > 0 {
        tracing::warn!(
            feed = %feed.label(),
            missing_id = skipped.missing_id,
            duplicate_id = skipped.duplicate_id,
            "items skipped: without a string or number id at `{}`, or repeating an earlier id",
            feed.def.id
        );
    }
}

#[cfg(test)]
mod tests {
    use super::loud;

    #[test]
    fn an_outage_is_logged_loudly_at_doubling_failure_counts_only() {
        let warned: Vec<u32> = (1..=1000).filter(|&f| loud(f)).collect();
        assert_eq!(warned, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]);
    }
}
