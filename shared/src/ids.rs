//! Newtype identifiers, so an agent id can never be passed where an activation id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Wraps a string without validation: ids are opaque to the fleet.
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            /// The id as it appears on the wire and in Valkey.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// An agent's Hub id; by the fleet's convention it equals the agent's name and its directory.
    AgentId
);
string_id!(
    /// One activation (one claim of one work item); fences every lease operation.
    ActivationId
);
string_id!(
    /// A runner process; must be unique per process (`RUNNER_ID`, default `$HOSTNAME`).
    RunnerId
);
string_id!(
    /// One work item, stable across retries so idempotency keys survive a requeue.
    WorkItemId
);

impl ActivationId {
    /// A fresh random activation id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

impl WorkItemId {
    /// A fresh random work item id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}
