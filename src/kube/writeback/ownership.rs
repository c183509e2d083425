//! Who owns `spec.addresses`, read from the object's `metadata.managedFields` (server-side apply's
//! record of which field manager set which field; every write since Kubernetes 1.18 is recorded,
//! client-side `kubectl apply` and plain updates included).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

/// globaldns's field manager: the only one whose `spec.addresses` globaldns writes or withdraws.
pub const FIELD_MANAGER: &str = "globaldns";

/// Who set an entry's `spec.addresses`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecAddresses {
    /// The field is absent (or empty).
    Absent,
    /// Set, and globaldns is its only owner: a copy of the VIP, not a user's address.
    Ours,
    /// Set by other managers (a person's `kubectl`, a GitOps tool, Admiral…), named; also when
    /// globaldns shares the field with them: theirs wins. An empty list: set, but with no record
    /// of who did it, which counts as a user's.
    Theirs(Vec<String>),
}

impl SpecAddresses {
    /// Reads the owners of `spec.addresses` (`present`: non-empty) from `managed`. A field
    /// another manager declared empty (`addresses: []` in a manifest) is still theirs: an apply
    /// of ours would conflict with it.
    pub fn of(present: bool, managed: &[ManagedFieldsEntry]) -> SpecAddresses {
        let mut ours = false;
        let mut theirs: Vec<String> = Vec::new();
        for m in managed.iter().filter(|m| owns_spec_addresses(m)) {
            match m.manager.as_deref() {
                Some(FIELD_MANAGER) => ours = true,
                other => {
                    let name = other.unwrap_or("<unnamed>").to_string();
                    if !theirs.contains(&name) {
                        theirs.push(name);
                    }
                }
            }
        }
        match (present, ours, theirs.is_empty()) {
            (false, _, true) => SpecAddresses::Absent,
            (true, true, true) => SpecAddresses::Ours,
            _ => SpecAddresses::Theirs(theirs),
        }
    }
}

/// Whether globaldns's manager owns any field of the object (so a withdrawal has something to do).
pub fn ours_anywhere(managed: &[ManagedFieldsEntry]) -> bool {
    managed.iter().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.as_object().is_some_and(|o| !o.is_empty()))
    })
}

/// Whether one managedFields entry owns `spec.addresses` (the field, or items of it).
fn owns_spec_addresses(m: &ManagedFieldsEntry) -> bool {
    m.fields_v1
        .as_ref()
        .and_then(|f| f.0.get("f:spec"))
        .and_then(|spec| spec.get("f:addresses"))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use serde_json::json;

    fn managed(manager: &str, op: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(op.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn addresses() -> serde_json::Value {
        json!({"f:spec": {"f:addresses": {}}})
    }

    fn hosts() -> serde_json::Value {
        json!({"f:spec": {"f:hosts": {}, "f:ports": {}}})
    }

    #[test]
    fn owners_of_spec_addresses() {
        let ours = managed(FIELD_MANAGER, "Apply", addresses());
        let person = managed("kubectl", "Apply", addresses());
        let creator = managed("kubectl-client-side-apply", "Update", hosts());
        assert_eq!(
            SpecAddresses::of(false, std::slice::from_ref(&ours)),
            SpecAddresses::Absent
        );
        // Declared empty in someone's manifest: theirs, an apply of ours would conflict.
        assert_eq!(
            SpecAddresses::of(false, &[managed("argocd", "Apply", addresses())]),
            SpecAddresses::Theirs(vec!["argocd".into()])
        );
        assert_eq!(
            SpecAddresses::of(true, &[creator.clone(), ours.clone()]),
            SpecAddresses::Ours
        );
        // Shared with a person's apply of the same values: theirs.
        assert_eq!(
            SpecAddresses::of(true, &[ours.clone(), person.clone()]),
            SpecAddresses::Theirs(vec!["kubectl".into()])
        );
        // Set with no record of who did it: a user's.
        assert_eq!(
            SpecAddresses::of(true, std::slice::from_ref(&creator)),
            SpecAddresses::Theirs(vec![])
        );
        assert!(ours_anywhere(&[creator.clone(), ours]));
        assert!(!ours_anywhere(&[creator, person]));
        // An apply of nothing leaves an entry with no fields: nothing left to withdraw.
        assert!(!ours_anywhere(&[managed(
            FIELD_MANAGER,
            "Apply",
            json!({})
        )]));
    }
}
