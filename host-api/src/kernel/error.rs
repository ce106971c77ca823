use super::Namespace;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelErrorKind {
    NotFound,
    Exists,
    Invalid,
    Failed,
}

/// A failed kernel operation, with what was attempted on which object in
/// which namespace: `failed to add address 10.244.10.2/24 to eth0 in
/// container netns: File exists (os error 17)`.
#[derive(Debug, thiserror::Error)]
#[error("failed to {operation} in {namespace}: {reason}")]
pub struct KernelError {
    pub kind: KernelErrorKind,
    /// What was attempted, naming the object: `add address 10.244.10.2/24 to eth0`.
    pub operation: String,
    pub namespace: Namespace,
    pub reason: String,
}

impl KernelError {
    pub fn new(
        kind: KernelErrorKind,
        namespace: Namespace,
        operation: impl Into<String>,
        reason: impl std::fmt::Display,
    ) -> Self {
        Self {
            kind,
            operation: operation.into(),
            namespace,
            reason: reason.to_string(),
        }
    }
}
