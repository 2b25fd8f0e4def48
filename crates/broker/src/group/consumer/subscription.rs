//! What a consumer-protocol member subscribes to: topic names, a regular
//! expression, or both. The expression is matched against whole topic
//! names (as Kafka's `Pattern.matches` does), never against internal
//! topics, and again whenever the topics the metadata knows change.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;
use regex::Regex;

/// The metadata as the state machine sees it: a topic's id and partition
/// count by name, and every topic a regular expression may match.
pub(crate) trait TopicCatalog {
    fn shape(&self, name: &str) -> Option<super::TopicShape>;

    /// Every topic name but the internal ones.
    fn names(&self) -> Vec<String> {
        Vec::new()
    }

    /// The name of a topic by id.
    fn name_of(&self, _id: &uuid::Uuid) -> Option<String> {
        None
    }
}

impl<F: Fn(&str) -> Option<super::TopicShape>> TopicCatalog for F {
    fn shape(&self, name: &str) -> Option<super::TopicShape> {
        self(name)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Subscription {
    pub(crate) names: BTreeSet<String>,
    regex: Option<(String, Regex)>,
    matches: BTreeSet<String>,
}

impl Subscription {
    pub(crate) fn regex(&self) -> Option<&str> {
        self.regex.as_ref().map(|(source, _)| source.as_str())
    }

    /// The topics the member consumes: its names and what its expression
    /// matches.
    pub(crate) fn topics(&self) -> BTreeSet<String> {
        self.names.union(&self.matches).cloned().collect()
    }

    /// Sets the expression; an empty one removes it. Returns whether it
    /// changed.
    pub(crate) fn set_regex(&mut self, source: &str) -> Result<bool, ResponseError> {
        if self.regex() == Some(source) || (source.is_empty() && self.regex.is_none()) {
            return Ok(false);
        }
        if source.is_empty() {
            self.regex = None;
            self.matches.clear();
            return Ok(true);
        }
        let compiled = Regex::new(&format!("^(?:{source})$"))
            .map_err(|_| ResponseError::InvalidRegularExpression)?;
        self.regex = Some((source.to_string(), compiled));
        self.matches.clear();
        Ok(true)
    }

    /// Matches the expression against `topics` again; returns whether the
    /// matches changed.
    pub(crate) fn refresh(&mut self, topics: &[String]) -> bool {
        let Some((_, regex)) = &self.regex else {
            return false;
        };
        let matches: BTreeSet<String> = topics
            .iter()
            .filter(|name| regex.is_match(name))
            .cloned()
            .collect();
        let changed = matches != self.matches;
        self.matches = matches;
        changed
    }

    /// A subscription as stored: the expression is compiled again (one
    /// that no longer compiles is dropped) and keeps its last matches.
    pub(crate) fn restore(
        names: BTreeSet<String>,
        regex: Option<String>,
        matches: BTreeSet<String>,
    ) -> Self {
        let mut subscription = Subscription {
            names,
            ..Subscription::default()
        };
        if let Some(source) = regex {
            if subscription.set_regex(&source).is_ok() {
                subscription.matches = matches;
            }
        }
        subscription
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expression_matches_whole_names_and_is_checked() {
        let mut subscription = Subscription::default();
        assert_eq!(subscription.set_regex("orders-.*"), Ok(true));
        assert_eq!(subscription.set_regex("orders-.*"), Ok(false));
        let topics = ["orders-eu", "orders-us", "old-orders-eu"].map(String::from);
        assert!(subscription.refresh(&topics));
        assert!(!subscription.refresh(&topics));
        let expected: BTreeSet<String> = ["orders-eu", "orders-us"].map(String::from).into();
        assert_eq!(subscription.topics(), expected);
        assert_eq!(
            subscription.set_regex("orders-("),
            Err(ResponseError::InvalidRegularExpression)
        );
        assert_eq!(subscription.set_regex(""), Ok(true));
        assert!(subscription.topics().is_empty());
    }
}
