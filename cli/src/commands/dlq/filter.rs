//! The filters the dead-letter commands share: module, path, failure kind
//! and a time range, sent to the service as they are read here.

use crate::exit::Failed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use txmirror_runtime::{DeadLetterFilter, FailureKind};

/// Which dead letters a command takes; every filter given must hold.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct LetterFilterArgs {
    /// Only this module's letters (its content hash).
    #[arg(long)]
    module: Option<String>,
    /// Only letters of transactions asked to run this path.
    #[arg(long)]
    path: Option<String>,
    /// Only letters whose last failure is of this kind (`unavailable`,
    /// `effect_in_doubt`, `conflict`…).
    #[arg(long)]
    kind: Option<String>,
    /// Only letters written at or after this time: an RFC 3339 time
    /// (`2026-11-30T07:00:00Z`), milliseconds since the Unix epoch, or a
    /// duration ago (`90s`, `15m`, `2h`, `1day`).
    #[arg(long)]
    since: Option<String>,
    /// Only letters written before this time (the same forms as --since).
    #[arg(long)]
    until: Option<String>,
}

/// The filter the arguments say, read against the clock at `now`.
pub(crate) struct LetterFilter {
    pub(crate) filter: DeadLetterFilter,
}

impl LetterFilterArgs {
    /// The filter, or a usage error naming the argument that is wrong.
    pub(crate) fn read(&self, now: SystemTime) -> Result<LetterFilter, Failed> {
        let mut filter = DeadLetterFilter::default();
        if let Some(module) = &self.module {
            filter = filter.module(module.clone());
        }
        if let Some(path) = &self.path {
            filter = filter.path(path.clone());
        }
        if let Some(kind) = &self.kind {
            let known = FailureKind::from_name(kind)
                .ok_or_else(|| Failed::usage(format!("--kind `{kind}` is not a failure kind")))?;
            filter = filter.kind(known);
        }
        let since = self.since.as_deref().map(|text| unix_ms("--since", text, now)).transpose()?;
        let until = self.until.as_deref().map(|text| unix_ms("--until", text, now)).transpose()?;
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            return Err(Failed::usage("the time range is empty: --since is not before --until"));
        }
        if let Some(since) = since {
            filter = filter.since(since);
        }
        if let Some(until) = until {
            filter = filter.until(until);
        }
        Ok(LetterFilter { filter })
    }
}

impl LetterFilter {
    /// The filter's fields as the service's API names them, for a query
    /// string or a JSON body.
    pub(crate) fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let filter = &self.filter;
        let mut fields = serde_json::Map::new();
        let mut put = |name: &str, value: Option<serde_json::Value>| {
            if let Some(value) = value {
                fields.insert(name.to_string(), value);
            }
        };
        put("module", filter.module.clone().map(Into::into));
        put("path", filter.path.clone().map(Into::into));
        put("kind", filter.kind.map(|kind| kind.as_str().into()));
        put("since_unix_ms", filter.since_unix_ms.map(Into::into));
        put("until_unix_ms", filter.until_unix_ms.map(Into::into));
        fields
    }

    /// Posts the filter, a limit and `extra` fields as the JSON body of the
    /// bulk operation at `path` (`/v1/dlq/replay`, `/v1/dlq/drop`); the
    /// service's answer.
    pub(crate) async fn post(
        &self,
        remote: crate::remote::Remote,
        path: &'static str,
        limit: usize,
        extra: &[(&str, serde_json::Value)],
    ) -> Result<serde_json::Value, Failed> {
        let mut body = self.fields();
        body.insert("limit".into(), limit.into());
        for (name, value) in extra {
            body.insert((*name).to_string(), value.clone());
        }
        let body = serde_json::to_vec(&body).map_err(|e| Failed { code: 2, error: e.into() })?;
        crate::commands::blocking(remote, move |remote| {
            remote.call("POST", path, Some(("application/json", body)), &[])
        })
        .await
    }

    /// The filter as a query string (without its `?`), with a limit.
    pub(crate) fn query(&self, limit: usize) -> Result<String, Failed> {
        let mut pairs: Vec<(String, String)> = self
            .fields()
            .into_iter()
            .map(|(name, value)| (name, value.as_str().map_or_else(|| value.to_string(), str::to_string)))
            .collect();
        pairs.push(("limit".into(), limit.to_string()));
        serde_urlencoded::to_string(pairs).map_err(|e| Failed { code: 2, error: e.into() })
    }
}

/// A time as milliseconds since the Unix epoch: RFC 3339, a number of
/// milliseconds, or a duration before `now`.
fn unix_ms(argument: &str, text: &str, now: SystemTime) -> Result<u64, Failed> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let time = if let Ok(ago) = humantime::parse_duration(text) {
        now.checked_sub(ago).unwrap_or(UNIX_EPOCH)
    } else if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        time
    } else {
        return Err(Failed::usage(format!(
            "{argument} `{text}` is not a time: give an RFC 3339 time (2026-11-30T07:00:00Z), \
             milliseconds since the Unix epoch, or a duration ago (15m, 2h)"
        )));
    };
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    Ok(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(since: Option<&str>, until: Option<&str>) -> LetterFilterArgs {
        LetterFilterArgs { since: since.map(str::to_string), until: until.map(str::to_string), ..Default::default() }
    }

    #[test]
    fn times_read_in_three_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let filter = args(Some("2h"), Some("9000000")).read(now).expect("valid").filter;
        assert_eq!(filter.since_unix_ms, Some(10_000_000 - 7_200_000));
        assert_eq!(filter.until_unix_ms, Some(9_000_000));
        let filter = args(Some("1970-01-01T00:00:01Z"), None).read(now).expect("valid").filter;
        assert_eq!(filter.since_unix_ms, Some(1_000));
    }

    #[test]
    fn a_bad_time_kind_or_range_is_refused_by_name() {
        let now = SystemTime::now();
        let error = args(Some("yesterday-ish"), None).read(now).err().expect("refused");
        assert!(error.error.to_string().contains("--since `yesterday-ish`"), "{}", error.error);
        let error = args(Some("1000"), Some("1000")).read(now).err().expect("refused");
        assert!(error.error.to_string().contains("empty"), "{}", error.error);
        let kind = LetterFilterArgs { kind: Some("oops".into()), ..Default::default() };
        assert!(kind.read(now).err().expect("refused").error.to_string().contains("--kind `oops`"));
    }

    #[test]
    fn the_query_names_fields_as_the_api_does() {
        let args = LetterFilterArgs {
            path: Some("charge".into()),
            kind: Some("effect_in_doubt".into()),
            since: Some("5".into()),
            ..Default::default()
        };
        let query = args.read(SystemTime::now()).expect("valid").query(7).expect("encodes");
        assert_eq!(query, "kind=effect_in_doubt&path=charge&since_unix_ms=5&limit=7");
    }
}
