//! Consumer group configs (Kafka's GROUP config resource): the keys Kafka 4
//! defines for groups under the consumer protocol, their checks, and the
//! settings a group runs with, its overrides over the broker's defaults.
//! Overrides live in the metadata image, so every coordinator a group
//! moves to applies the same ones. Share and streams groups are not
//! implemented, so their keys are refused with a message saying so.

use std::collections::BTreeMap;

use crate::{
    group::{ConsumerLimits, ConsumerSettings},
    topic_config::{ConfigSource, InvalidConfig},
};

/// A group config key: an integer number of milliseconds whose default is
/// a broker setting.
#[derive(Debug)]
pub struct GroupConfigDef {
    pub name: &'static str,
    /// Kafka's broker setting that gives the default, reported as a synonym.
    pub broker_synonym: &'static str,
    /// Keel's flag for that setting.
    pub broker_flag: &'static str,
    pub doc: &'static str,
    default: fn(&ConsumerSettings) -> i32,
}

/// Every group config Keel implements, in Kafka's order (alphabetical).
pub const GROUP_CONFIGS: &[GroupConfigDef] = &[
    GroupConfigDef {
        name: "consumer.heartbeat.interval.ms",
        broker_synonym: "group.consumer.heartbeat.interval.ms",
        broker_flag: "group-consumer-heartbeat-interval-ms",
        doc: "How often the group's consumer-protocol members are told to heartbeat.",
        default: |settings| settings.heartbeat_interval_ms,
    },
    GroupConfigDef {
        name: "consumer.session.timeout.ms",
        broker_synonym: "group.consumer.session.timeout.ms",
        broker_flag: "group-consumer-session-timeout-ms",
        doc: "How long a consumer-protocol member of the group may go without a heartbeat before it is removed.",
        default: |settings| settings.session_timeout_ms,
    },
];

/// Checks one key and value against the broker's bounds; returns the value
/// in canonical form.
pub fn validate(key: &str, value: &str, limits: &ConsumerLimits) -> Result<String, InvalidConfig> {
    let invalid = |reason: &str| InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if key.starts_with("share.") {
        return Err(invalid("share groups are not implemented in Keel"));
    }
    if key.starts_with("streams.") {
        return Err(invalid("streams groups are not implemented in Keel"));
    }
    let (min, max) = match key {
        "consumer.session.timeout.ms" => limits.session_timeout_ms,
        "consumer.heartbeat.interval.ms" => limits.heartbeat_interval_ms,
        _ => return Err(invalid("unknown group config")),
    };
    match value.trim().parse::<i32>() {
        Ok(ms) if (min..=max).contains(&ms) => Ok(ms.to_string()),
        _ => Err(invalid(&format!(
            "must be between {min} and {max} milliseconds (the broker's bounds)"
        ))),
    }
}

/// The settings a group with these overrides runs with.
pub fn settings(
    overrides: Option<&BTreeMap<String, String>>,
    defaults: &ConsumerSettings,
) -> ConsumerSettings {
    let get = |key: &str| {
        overrides
            .and_then(|o| o.get(key))
            .and_then(|v| v.parse::<i32>().ok())
    };
    ConsumerSettings {
        session_timeout_ms: get("consumer.session.timeout.ms")
            .unwrap_or(defaults.session_timeout_ms),
        heartbeat_interval_ms: get("consumer.heartbeat.interval.ms")
            .unwrap_or(defaults.heartbeat_interval_ms),
    }
}

/// Checks a group's whole set of overrides against the broker's defaults:
/// members must be told to heartbeat more often than their session lasts.
pub fn validate_together(
    overrides: &BTreeMap<String, String>,
    defaults: &ConsumerSettings,
) -> Result<(), InvalidConfig> {
    let effective = settings(Some(overrides), defaults);
    if effective.heartbeat_interval_ms >= effective.session_timeout_ms {
        return Err(InvalidConfig {
            key: "consumer.heartbeat.interval.ms".into(),
            value: effective.heartbeat_interval_ms.to_string(),
            reason: format!(
                "must be less than consumer.session.timeout.ms ({})",
                effective.session_timeout_ms
            ),
        });
    }
    Ok(())
}

/// A key's effective value for a group and where it comes from; `explicit`
/// says the broker's flag for its default was set.
pub fn effective_value(
    def: &GroupConfigDef,
    overrides: Option<&BTreeMap<String, String>>,
    defaults: &ConsumerSettings,
    explicit: bool,
) -> (String, ConfigSource) {
    if let Some(value) = overrides.and_then(|o| o.get(def.name)) {
        return (value.clone(), ConfigSource::DynamicGroup);
    }
    let source = if explicit {
        ConfigSource::StaticBroker
    } else {
        ConfigSource::Default
    };
    ((def.default)(defaults).to_string(), source)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: ConsumerSettings = ConsumerSettings {
        session_timeout_ms: 45_000,
        heartbeat_interval_ms: 5_000,
    };
    const LIMITS: ConsumerLimits = ConsumerLimits {
        session_timeout_ms: (1_000, 60_000),
        heartbeat_interval_ms: (500, 15_000),
    };

    #[test]
    fn consumer_keys_are_checked_and_share_and_streams_keys_refused_by_name() {
        let check = |key, value| validate(key, value, &LIMITS);
        assert_eq!(
            check("consumer.session.timeout.ms", " 20000").unwrap(),
            "20000"
        );
        assert!(check("consumer.session.timeout.ms", "999").is_err());
        assert!(check("consumer.session.timeout.ms", "60001").is_err());
        let fast = check("consumer.heartbeat.interval.ms", "1").unwrap_err();
        assert!(fast.reason.contains("between 500 and 15000"), "{fast}");
        let share = check("share.record.lock.duration.ms", "1000").unwrap_err();
        assert!(share.reason.contains("share groups"), "{share}");
        let streams = check("streams.num.standby.replicas", "1").unwrap_err();
        assert!(streams.reason.contains("streams groups"), "{streams}");
        assert!(check("consumer.bogus.ms", "1").is_err());
    }

    #[test]
    fn overrides_win_and_the_heartbeat_stays_below_the_session() {
        let overrides: BTreeMap<String, String> =
            [("consumer.session.timeout.ms".into(), "8000".into())].into();
        let effective = settings(Some(&overrides), &DEFAULTS);
        assert_eq!(
            (
                effective.session_timeout_ms,
                effective.heartbeat_interval_ms
            ),
            (8_000, 5_000)
        );
        assert!(validate_together(&overrides, &DEFAULTS).is_ok());
        let too_short: BTreeMap<String, String> =
            [("consumer.session.timeout.ms".into(), "5000".into())].into();
        assert!(validate_together(&too_short, &DEFAULTS).is_err());
        let def = &GROUP_CONFIGS[1];
        assert_eq!(
            effective_value(def, Some(&overrides), &DEFAULTS, false),
            ("8000".into(), ConfigSource::DynamicGroup)
        );
        assert_eq!(
            effective_value(def, None, &DEFAULTS, true),
            ("45000".into(), ConfigSource::StaticBroker)
        );
    }
}
