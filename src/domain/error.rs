//! Domain errors raised by the pure business rules.

/// Domain error: pure rules' failures. Mapped to gRPC codes elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Bad input: `field` is the request field path (e.g. "national_id", "lines[3].unit_price").
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Request field path that was rejected.
        field: String,
        /// Human-readable reason the value was rejected.
        reason: String,
    },
    /// A business rule forbids it. `rule` is a short snake_case rule name (e.g. "filing_overlap").
    #[error("{rule}: {detail}")]
    Precondition {
        /// Short snake_case name of the violated rule.
        rule: &'static str,
        /// Human-readable detail of the violation.
        detail: String,
    },
}

impl DomainError {
    /// Builds an [`DomainError::Invalid`] for request field `field` with `reason`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Builds a [`DomainError::Precondition`] for business rule `rule` with `detail`.
    pub fn precondition(rule: &'static str, detail: impl Into<String>) -> Self {
        Self::Precondition {
            rule,
            detail: detail.into(),
        }
    }
}

/// Result alias for fallible domain operations.
pub type DomainResult<T> = Result<T, DomainError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_formats() {
        let e = DomainError::invalid("lines[3].unit_price", "too many decimals");
        assert_eq!(
            e.to_string(),
            "invalid lines[3].unit_price: too many decimals"
        );
        let p = DomainError::precondition("filing_overlap", "already filed");
        assert_eq!(p.to_string(), "filing_overlap: already filed");
    }
}
