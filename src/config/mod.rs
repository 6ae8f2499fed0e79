//! Configuration with Kafka's key names and meanings: the broker's (from a TOML file and
//! `--set`), and topic configs layered over broker defaults.
//!
//! Every key is declared once in a table ([`broker::BROKER_KEYS`], [`topic::TOPIC_KEYS`])
//! with its type and default; parsing, validation and DescribeConfigs all read that table,
//! so an unknown key or a value of the wrong type is an error naming the key.

pub mod broker;
pub mod groups;
pub mod topic;

pub use broker::BrokerConfig;

/// The type of a config value, with Kafka's DescribeConfigs type codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Long,
    Double,
    List,
    Password,
}

impl ConfigType {
    /// The `config_type` field of DescribeConfigs v3+.
    pub fn code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
            ConfigType::Password => 9,
        }
    }

    /// Checks that `value` parses as this type; the message names what was expected.
    pub fn check(self, value: &str) -> Result<(), String> {
        let ok = match self {
            ConfigType::Boolean => matches!(value, "true" | "false"),
            ConfigType::Int => value.trim().parse::<i32>().is_ok(),
            ConfigType::Long => value.trim().parse::<i64>().is_ok(),
            ConfigType::Double => value.trim().parse::<f64>().is_ok(),
            ConfigType::String | ConfigType::List | ConfigType::Password => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {self:?}, got {value:?}").to_lowercase())
        }
    }
}

/// Where a described config value comes from (Kafka's `ConfigSource` codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    TopicConfig = 1,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}
