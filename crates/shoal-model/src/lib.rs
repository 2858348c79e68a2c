//! Shoal's resource model: Azure Resource Manager's JSON shapes, the size catalogue,
//! validation, ARM error codes, and the records the control plane and agents exchange.
//!
//! No I/O happens here: the API parses requests into these types, the store keeps them
//! as JSON, controllers and agents read them back.

pub mod appgw;
pub mod arm;
pub mod autoscale;
pub mod cidr;
pub mod clock;
pub mod duration;
pub mod error;
pub mod ids;
pub mod keys;
pub mod managed_identity;
pub mod names;
pub mod network;
pub mod placement;
pub mod records;
pub mod sizes;
pub mod sku;
pub mod upgrade_policy;
pub mod vmss;
pub mod vmss_stored;
pub mod vnet;

pub use error::{ArmError, ArmResult};

/// Declares a string enum that (de)serializes as Azure does: case-insensitive on input,
/// canonical spelling on output, and an error listing the allowed values.
#[macro_export]
macro_rules! arm_enum {
    ($name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($s),+];
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                $( if s.eq_ignore_ascii_case($s) { return Some(Self::$variant); } )+
                None
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "'{}' is not one of: {}", s, Self::ALL.join(", ")
                    ))
                })
            }
        }
    };
}
