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

use super::cadence::Cadence;
use super::contract::{self, Events, Render};
use super::diff::diff;
use super::extract::{extract, ExtractError, ItemList, Skipped};
use super::object::{appended, extract_object};
use super::stats::DefStats;
use super::Feed;
use crate::budget::{retained, Charge};
use crate::config::{AuthMode, FeedConfig};
use crate::limits::Limits;
use crate::metrics::{Metrics, PollOutcome};
use crate::upstream::{PollError, Polled, Upstream, UpstreamError, Validators};
use crate::wire as encode;

/// How long a refresh request waits for more of its kind before polling.
pub const REFRESH_DEBOUNCE: Duration = Duration::from_millis(5);

/// The longest gap [`refresh_gap`] imposes between two refresh polls.
pub const REFRESH_GAP_MAX: Duration = Duration::from_secs(1);

/// At most one poll per this long is made for refreshes (the refresh
/// endpoint, write-through) of one feed: `min(interval, 1s)`. Refreshes in
/// between are coalesced into one poll at the end of the gap, so none is
/// lost and a flood of them costs the upstream a bounded number of polls.
pub fn refresh_gap(def: &FeedConfig) -> Duration {
    def.interval.min(REFRESH_GAP_MAX)
}

/// Where poll loops leave their latest answer, so plain polls of the same
/// upstream path can be answered from it (`serve_polls`). The straggler
/// cache implements it; the feed layer never imports that cache.
pub trait Answers: Send + Sync {
    /// The recorder of one poll loop: `poll` is the feed's upstream path
    /// (parameters filled in), `headers` the credentials its polls send.
    fn recorder(&self, feed: &Arc<Feed>, poll: &str, headers: &HeaderMap) -> Box<dyn Record>;
}

/// One poll loop's side of [`Answers`], told at each moment of a poll.
/// Dropping it withdraws the loop's answer.
pub trait Record: Send {
    /// A poll is about to start.
    fn polling(&mut self, feed: &Feed);
    /// A poll answered 200 with this body; the next poll is `next` away.
    fn body(&mut self, body: Bytes, head: &HeaderMap, next: Duration);
    /// A poll confirmed the answer in force (304, or an unchanged body).
    fn confirmed(&mut self, next: Duration);
    /// The answer in force no longer stands (a failure, a write).
    fn withdraw(&mut self);
}

/// No feed serves polls: every record does nothing.
pub(crate) struct NoAnswers;

impl Answers for NoAnswers {
    fn recorder(&self, _: &Arc<Feed>, _: &str, _: &HeaderMap) -> Box<dyn Record> {
        Box::new(NoAnswers)
    }
}

impl Record for NoAnswers {
    fn polling(&mut self, _: &Feed) {}
    fn body(&mut self, _: Bytes, _: &HeaderMap, _: Duration) {}
    fn confirmed(&mut self, _: Duration) {}
    fn withdraw(&mut self) {}
}

/// Ends a feed nobody subscribes to; `true` when it ended.
pub(crate) type RemoveIfIdle = Box<dyn Fn(&Arc<Feed>) -> bool + Send + Sync>;

/// What one poll loop needs from the registry that started it, handed in so
/// the poller never reaches into the registry's insides.
pub(crate) struct PollCtx {
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub answers: Arc<dyn Answers>,
    /// This feed definition's counters for the status page.
    pub stats: Arc<DefStats>,
    pub shutdown: tokio_util::sync::CancellationToken,
    /// End the feed if nobody subscribes to it (the check and the removal
    /// are one step under the registry's lock); `true` when it ended.
    pub remove_if_idle: RemoveIfIdle,
}

/// Run until the feed is idle past its linger, or shutdown. `charge` is the
/// feed's share of the memory budget, resized to what each good poll keeps.
pub(crate) async fn run(feed: Arc<Feed>, ctx: PollCtx, mut charge: Charge) {
    let def = feed.def.clone();
    let stats = ctx.stats.clone();
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

    // Withdraws this feed's answer to stragglers however the loop ends.
    let mut replay = ctx.answers.recorder(&feed, &poll, &headers);
    let mut prev: Option<(Bytes, Arc<ItemList>)> = None;
    let mut validators = Validators::default();
    let mut failures: u32 = 0;
    let mut skipped = Skipped::default();
    let mut stale_since = SystemTime::now();
    let mut idle_since: Option<Instant> = None;
    let mut cadence = Cadence::new(&def);
    // When the last refresh poll began (see `refresh_gap`).
    let mut last_refresh: Option<tokio::time::Instant> = None;
    // A good poll was published while someone listened. Until then, a feed
    // nobody listens to ends at once instead of lingering: a client cannot
    // park feeds by opening streams and leaving before they deliver.
    let mut served = false;
    // Woken by `Subscription`'s drop when the last subscriber leaves.
    let mut changes = feed.watch();

    loop {
        if feed.is_finished() {
            // Nothing changes any more: no polls, only wait to be dropped.
            if feed.subscribers() == 0 {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= def.linger && (ctx.remove_if_idle)(&feed) {
                    break;
                }
            } else {
                idle_since = None;
            }
            let wait = def
                .linger
                .min(def.interval.max(std::time::Duration::from_millis(10)));
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        if feed.subscribers() == 0 {
            if !served && (ctx.remove_if_idle)(&feed) {
                break;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= def.linger && (ctx.remove_if_idle)(&feed) {
                break;
            }
        } else {
            idle_since = None;
        }

        let started = Instant::now();
        // Conditions only once there is a list a 304 can refer to.
        let conditions = prev.as_ref().and(Some(&validators));
        replay.polling(&feed);
        let polled = ctx.upstream.poll(&path, headers.clone(), conditions).await;
        let took = started.elapsed();
        let bytes = polled.as_ref().map_or(0, |p| p.len() as u64);
        let fresh_for = polled.as_ref().ok().and_then(Polled::fresh_for);
        let next = cadence.longest_next(fresh_for);
        // `Err((reason, Retry-After))`
        let (counted, outcome) = match polled {
            Ok(Polled::NotModified(_)) => {
                replay.confirmed(next);
                (PollOutcome::not_modified, Ok(None))
            }
            Ok(Polled::Body(body, v, head)) => {
                let kept = body.clone();
                match prepare(&def, &feed.render, prev.as_ref(), body) {
                    // Over the budget: a failed poll, the old list stays (no
                    // item looks removed); retried with the failure backoff.
                    Ok(Some(u)) if !charge.resize(u.retained()) => (
                        PollOutcome::over_budget,
                        Err((
                            format!(
                                "keeping this body ({} bytes) would pass the feed memory budget ([limits] max_feed_memory = {} bytes)",
                                u.body.len(),
                                ctx.limits.budget().cap()
                            ),
                            None,
                        )),
                    ),
                    Ok(update) => {
                        validators = v;
                        // Before publishing: a client that saw the event gets this body.
                        replay.body(kept, &head, next);
                        (PollOutcome::ok, Ok(update))
                    }
                    Err(e) => (PollOutcome::invalid_body, Err((e.to_string(), None))),
                }
            }
            Err(e) => (outcome_of(&e), Err((e.to_string(), e.retry_after()))),
        };
        ctx.metrics.poll(&def.name, counted, took, bytes);
        let mut asked_to_wait = None;
        let mut changed = false;
        stats.record_poll(
            took,
            outcome.as_ref().err().map(|(reason, _)| reason.as_str()),
        );
        match outcome {
            Ok(update) => {
                // Recovery is told before the events that follow it.
                if failures > 0 {
                    stats.record_events(1);
                    tracing::info!(feed = %feed.label(), failures, "upstream recovered");
                    ctx.metrics.events(&def.name, contract::RECOVERED, 1);
                    feed.set_recovered(feed.render.recovered(stale_since, failures));
                }
                failures = 0;
                if let Some(update) = update {
                    changed = !update.first && !update.is_empty();
                    if update.skipped != skipped {
                        // Told when the counts change, not on every poll.
                        warn_skipped(&feed, &update.skipped);
                        skipped = update.skipped.clone();
                    }
                    stats.record_events(update.changes.len());
                    let end = update.terminal.clone();
                    prev = Some(update.publish(&feed, &ctx.metrics));
                    served = served || feed.subscribers() > 0;
                    if let Some(end) = end {
                        // No more polls: nothing would keep the answer current.
                        replay.withdraw();
                        tracing::info!(feed = %feed.label(), "terminal state reached; streams end");
                        feed.finish(end);
                    }
                }
            }
            Err((reason, retry_after)) => {
                replay.withdraw();
                asked_to_wait = retry_after;
                if failures == 0 {
                    stale_since = SystemTime::now();
                    stats.record_events(1);
                }
                failures = failures.saturating_add(1);
                if failures == 1 {
                    ctx.metrics.events(&def.name, contract::STALE, 1);
                }
                // A long outage logs its 1st, 2nd, 4th, 8th... failure at warn
                // (the rest at debug): visible, without a line per poll.
                if loud(failures) {
                    tracing::warn!(feed = %feed.label(), failures, %reason, "poll failed");
                } else {
                    tracing::debug!(feed = %feed.label(), failures, %reason, "poll failed");
                }
                feed.set_stale(feed.render.stale(&reason, failures, stale_since));
            }
        }

        let mut delay = match failures {
            0 => cadence.succeeded(changed, fresh_for),
            _ => cadence.failed(failures, asked_to_wait),
        };
        stats.record_delay(delay);
        ctx.metrics.poll_delay(&def.name, delay);
        if let Some(since) = idle_since {
            delay = delay.min(def.linger.saturating_sub(since.elapsed()));
        }
        let wake_at = tokio::time::Instant::now() + delay;
        let refreshed = loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break None,
                _ = feed.retired() => break None,
                _ = tokio::time::sleep_until(wake_at) => break Some(false),
                // Before it served anyone, the last subscriber leaving ends
                // the feed now, not at the next poll.
                r = changes.changed(), if !served => {
                    if r.is_err() || (feed.subscribers() == 0 && (ctx.remove_if_idle)(&feed)) {
                        break None;
                    }
                }
                _ = feed.refresh_requested() => break Some(true),
            }
        };
        match refreshed {
            None => break,
            Some(false) => {}
            Some(true) => {
                // A burst of writes becomes one poll, and refresh polls come
                // at most once per gap; refreshes meanwhile wait for it.
                let now = tokio::time::Instant::now();
                let at = last_refresh
                    .map_or(now, |t| t + refresh_gap(&def))
                    .max(now + REFRESH_DEBOUNCE);
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = feed.retired() => break,
                    _ = tokio::time::sleep_until(at) => {}
                }
                last_refresh = Some(tokio::time::Instant::now());
            }
        }
    }
    tracing::debug!(feed = %feed.label(), "feed stopped");
    // Subscribers still here (shutdown, retirement) look again and leave.
    feed.wake();
}

/// A good poll, ready to publish.
pub struct Update {
    body: Bytes,
    list: Arc<ItemList>,
    first: bool,
    /// `(event name, data)` per change, in order.
    changes: Events,
    /// Items extraction skipped (no usable id, or a repeated one).
    pub skipped: Skipped,
    /// The terminal event, when this poll reached a terminal state.
    terminal: Option<Bytes>,
}

/// Parse and diff a body against the previous one: the whole of poll
/// processing short of publishing. `Ok(None)`: the body is byte-identical to
/// the last one. An error leaves everything untouched.
pub fn prepare(
    def: &FeedConfig,
    render: &Render,
    prev: Option<&(Bytes, Arc<ItemList>)>,
    body: Bytes,
) -> Result<Option<Update>, ExtractError> {
    if prev.is_some_and(|(b, _)| *b == body) {
        return Ok(None);
    }
    let (list, skipped) = if def.object {
        (
            extract_object(body.clone(), &def.items, &def.id)?,
            Skipped::default(),
        )
    } else {
        extract(body.clone(), &def.items, &def.id)?
    };
    let changes = match prev {
        None => Vec::new(),
        Some((_, old)) => {
            // Entries appended to the object's array are told as `appended`
            // alone; the array then does not make the object `updated`.
            let appended = match (&def.append, old.items.first(), list.items.first()) {
                (Some(at), Some(a), Some(b)) => appended(a, b, at).map(|new| (b, new, at)),
                _ => None,
            };
            let mut ignore = def.ignore.clone();
            if let Some((_, _, at)) = &appended {
                ignore.push((*at).clone());
            }
            let ts = contract::now();
            render.changes(
                &diff(old, &list, &ignore),
                appended
                    .as_ref()
                    .map(|(item, new, _)| (*item, new.as_slice())),
                &def.ignore,
                &ts,
            )
        }
    };
    let terminal = render.terminal(&list);
    Ok(Some(Update {
        body,
        list: Arc::new(list),
        first: prev.is_none(),
        changes,
        skipped,
        terminal,
    }))
}

impl Update {
    /// What keeping this update costs the memory budget.
    pub fn retained(&self) -> u64 {
        retained(self.body.len(), self.list.items.len())
    }

    /// How many events this update publishes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Encode each event once, with the id `id(seq)` for consecutive seqs from `first_seq`.
    pub fn encode(&self, first_seq: u64, id: impl Fn(u64) -> String) -> Vec<(u64, Bytes)> {
        self.changes
            .iter()
            .zip(first_seq..)
            .map(|((name, data), seq)| (seq, encode::event(&id(seq), name, data)))
            .collect()
    }

    /// Encode each event once, with its id, and hand everything to the feed.
    fn publish(self, feed: &Feed, metrics: &Metrics) -> (Bytes, Arc<ItemList>) {
        for (name, _) in &self.changes {
            metrics.events(&feed.def.name, name, 1);
        }
        if !self.first && self.changes.is_empty() {
            feed.replace_list(self.list.clone());
        } else if !self.first && feed.render.contract.resend {
            // The whole snapshot again, as one history entry with the id on
            // its last event (as for a subscriber's first snapshot).
            let (head, tail) = feed.render.snapshot(&self.list);
            let seq = feed.next_seq();
            let id = encode::id_line(&feed.id(seq));
            let mut b = Vec::with_capacity(head.len() + id.len() + tail.len());
            for part in [&head, &id, &tail] {
                b.extend_from_slice(part);
            }
            feed.publish(self.list.clone(), vec![(seq, Bytes::from(b))], false);
        } else {
            let events = self.encode(feed.next_seq(), |seq| feed.id(seq));
            feed.publish(self.list.clone(), events, self.first);
        }
        (self.body, self.list)
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
