//! API version negotiation: what the broker advertised, and the version we use per API.
//!
//! At connect the client sends ApiVersions and keeps the broker's ranges. For each request it
//! then picks the highest version both sides speak, as every Kafka client does; an API with no
//! common version is an error naming both ranges, not a silent downgrade.

use std::collections::HashMap;

use proto_kafka::messages::{ApiKey, ApiVersionsResponse};
use proto_kafka::protocol::VersionRange;

/// The ApiVersions version we try first. Version 3 is the first flexible one and the one
/// librdkafka and the Java client send; brokers that do not know it answer with version 0 and
/// `UNSUPPORTED_VERSION`, listing what they do support, and we retry at their highest.
pub const API_VERSIONS_FIRST_TRY: i16 = 3;

/// The version ranges a broker advertised, per API key.
#[derive(Debug, Clone, Default)]
pub struct BrokerVersions {
    ranges: HashMap<i16, VersionRange>,
}

impl BrokerVersions {
    /// Collects the ranges from an ApiVersions response.
    pub fn from_response(response: &ApiVersionsResponse) -> Self {
        let ranges = response
            .api_keys
            .iter()
            .map(|entry| {
                let range = VersionRange {
                    min: entry.min_version,
                    max: entry.max_version,
                };
                (entry.api_key, range)
            })
            .collect();
        BrokerVersions { ranges }
    }

    /// The range the broker advertised for `api`, if any.
    pub fn range(&self, api: ApiKey) -> Option<VersionRange> {
        self.ranges.get(&(api as i16)).copied()
    }

    /// The highest version of `api` within both `client` and the broker's range.
    pub fn highest_common(&self, api: ApiKey, client: VersionRange) -> Option<i16> {
        highest_common(client, self.range(api)?)
    }
}

/// The highest version in both ranges, or `None` when they do not overlap.
pub fn highest_common(client: VersionRange, broker: VersionRange) -> Option<i16> {
    let common = client.intersect(&broker);
    (!common.is_empty()).then_some(common.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(min: i16, max: i16) -> VersionRange {
        VersionRange { min, max }
    }

    #[test]
    fn picks_the_highest_version_both_sides_speak() {
        assert_eq!(highest_common(range(3, 13), range(0, 11)), Some(11));
        assert_eq!(highest_common(range(3, 9), range(0, 11)), Some(9));
        assert_eq!(highest_common(range(3, 9), range(9, 9)), Some(9));
    }

    #[test]
    fn disjoint_ranges_have_no_common_version() {
        assert_eq!(highest_common(range(3, 13), range(0, 2)), None);
        assert_eq!(highest_common(range(4, 4), range(5, 9)), None);
    }

    #[test]
    fn an_api_the_broker_did_not_advertise_has_no_version() {
        let versions = BrokerVersions::default();
        assert_eq!(versions.highest_common(ApiKey::Fetch, range(4, 18)), None);
    }
}
