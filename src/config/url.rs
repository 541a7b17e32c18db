//! The upstream base URL, validated once when the config is read.

use super::*;

/// The upstream base URL: `http://authority[/prefix]`, validated at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `http://host:port`, used to build request URIs.
    pub origin: String,
    /// Path prefix without trailing slash (`""` when none).
    pub prefix: String,
    /// The `host[:port]` part, for logs and the `Host` header.
    pub authority: http::uri::Authority,
}

impl UpstreamUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: Uri = s.parse().map_err(|e| format!("`{s}` is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "`{s}`: https upstreams are not supported; pollcast runs beside the API and speaks plain http to it"
                ))
            }
            _ => return Err(format!("`{s}` must start with http://")),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{s}` has no host"))?;
        if uri.query().is_some() {
            return Err(format!("`{s}` must not have a query string"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            origin: format!("http://{authority}"),
            prefix,
            authority,
        })
    }

    /// The absolute URI for an upstream path and query.
    pub fn join(&self, path_and_query: &str) -> Result<Uri, http::uri::InvalidUri> {
        format!("{}{}{}", self.origin, self.prefix, path_and_query).parse()
    }
}

/// For logs: a password in the URL's user info is shown as `REDACTED`.
impl std::fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.authority.as_str().rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => write!(f, "http://{user}:REDACTED@{host}{}", self.prefix),
                None => write!(f, "http://REDACTED@{host}{}", self.prefix),
            },
            None => write!(f, "{}{}", self.origin, self.prefix),
        }
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UpstreamUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}
