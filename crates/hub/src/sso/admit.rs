//! Who a provider's answer lets in, and with which role (SPEC §14). Pure: the
//! callback reads the user and the groups, this decides, the store records.
//!
//! The rules: a user is found by the identity linked at an earlier login, else by
//! email among the users added by name and not yet linked. A disabled user is
//! refused whatever their groups say. Otherwise the user's own role (if added by
//! name) and the role of every authorized group the provider lists for them are
//! pooled and the highest wins. Nobody is let in by nothing: no entry and no
//! matching group is a refusal, and so is a user whose entry was removed unless a
//! group still admits them (they come back as a new, group-admitted user).

use muster_store::{SsoGroupRecord, UserRecord};

/// What the provider vouched for, after its token was checked.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    /// Lower case; absent when the provider said it is not verified.
    pub email: Option<String>,
    /// `preferred_username` (Entra: the UPN), lower case.
    pub username: Option<String>,
    pub display_name: Option<String>,
    /// The groups claim; `None` when the provider sent none.
    pub groups: Option<Vec<String>>,
    /// The provider had too many groups to list and pointed elsewhere (Entra's
    /// group overage, `_claim_names`).
    pub overage: bool,
}

/// Why a sign-in was refused: the audit entry's `reason`, and what the person sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownUser,
    Disabled,
    NoMatchingGroup,
    GroupOverage,
    /// The email belongs to a user linked to another identity.
    IdentityTaken,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownUser => "unknown_user",
            Refusal::Disabled => "disabled",
            Refusal::NoMatchingGroup => "no_matching_group",
            Refusal::GroupOverage => "group_overage",
            Refusal::IdentityTaken => "identity_taken",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::UnknownUser => {
                "You are not a user of this hub. Ask an admin to add you (muster users add EMAIL --role ROLE)."
            }
            Refusal::Disabled => "Your user is disabled on this hub. Ask an admin to enable it.",
            Refusal::NoMatchingGroup => {
                "None of your groups may sign in to this hub, and you were not added by name. Ask an admin."
            }
            Refusal::GroupOverage => {
                "Your provider sent too many groups to list them in the token, so your groups could not be checked. \
                 Ask an admin to add you by email, or to have the provider send only the groups assigned to this application."
            }
            Refusal::IdentityTaken => {
                "Your email address belongs to another sign-in identity on this hub. Ask an admin."
            }
        }
    }
}

/// A sign-in let through: the user as it is to be written.
#[derive(Debug, Clone)]
pub struct Admission {
    pub user: UserRecord,
    /// Whether the user is created by this login.
    pub new: bool,
    /// The ids of the authorized groups that matched.
    pub matched: Vec<String>,
}

fn rank(role: &str) -> u8 {
    match role {
        "admin" => 2,
        "member" => 1,
        _ => 0,
    }
}

/// Decide. `linked`: the user linked to this identity; `by_name`: the user whose
/// name is the identity's email (or username), if any.
pub fn admit(
    id: &Identity,
    linked: Option<UserRecord>,
    by_name: Option<UserRecord>,
    groups: &[SsoGroupRecord],
    now: i64,
) -> Result<Admission, Refusal> {
    let entry = match (linked, by_name) {
        (Some(u), _) => Some(u),
        // Not linked yet, or linked at a provider no longer in use (the issuer
        // changed): found by email, linked now.
        (None, Some(u))
            if u.sso_subject.is_none() || u.sso_issuer.as_deref() != Some(&id.issuer) =>
        {
            Some(u)
        }
        // Linked to someone else at this provider: this identity may not take it over.
        (None, Some(_)) => return Err(Refusal::IdentityTaken),
        (None, None) => None,
    };
    if entry.as_ref().is_some_and(|u| u.disabled_at.is_some()) {
        return Err(Refusal::Disabled);
    }
    let listed = id.groups.as_deref().unwrap_or_default();
    let matched: Vec<&SsoGroupRecord> = groups.iter().filter(|g| listed.contains(&g.id)).collect();
    let granted = entry.as_ref().and_then(|u| u.granted_role.clone());
    let role = granted
        .iter()
        .map(String::as_str)
        .chain(matched.iter().map(|g| g.role.as_str()))
        .max_by_key(|r| rank(r));
    let Some(role) = role.map(str::to_owned) else {
        return Err(if id.overage {
            Refusal::GroupOverage
        } else if entry.is_some() || !groups.is_empty() {
            Refusal::NoMatchingGroup
        } else {
            Refusal::UnknownUser
        });
    };
    let matched_ids: Vec<String> = matched.iter().map(|g| g.id.clone()).collect();
    let (mut user, new) = match entry {
        Some(u) => (u, false),
        None => {
            let name = id
                .email
                .clone()
                .or_else(|| id.username.clone())
                .unwrap_or_else(|| format!("sub:{}", id.subject));
            let mut u = UserRecord::new(
                uuid::Uuid::new_v4().to_string(),
                name,
                role.clone(),
                String::new(),
                now,
            );
            u.granted_role = None;
            (u, true)
        }
    };
    user.role = role;
    user.display_name = id.display_name.clone().or(user.display_name);
    user.sso_issuer = Some(id.issuer.clone());
    user.sso_subject = Some(id.subject.clone());
    user.groups = matched_ids.clone();
    user.last_login_at = Some(now);
    Ok(Admission {
        user,
        new,
        matched: matched_ids,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn group(id: &str, role: &str) -> SsoGroupRecord {
        SsoGroupRecord {
            id: id.into(),
            name: format!("{id} team"),
            role: role.into(),
            created_at: 0,
        }
    }

    fn added(name: &str, role: &str) -> UserRecord {
        UserRecord::new("u1".into(), name.into(), role.into(), String::new(), 0)
    }

    fn alice(groups: &[&str]) -> Identity {
        Identity {
            issuer: "https://idp".into(),
            subject: "s-alice".into(),
            email: Some("alice@example.com".into()),
            display_name: Some("Alice".into()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            ..Identity::default()
        }
    }

    #[test]
    fn a_user_added_by_email_gets_their_role_and_is_linked() {
        let a = admit(
            &alice(&[]),
            None,
            Some(added("alice@example.com", "admin")),
            &[],
            5,
        )
        .unwrap();
        assert!(!a.new);
        assert_eq!(a.user.role, "admin");
        assert_eq!(a.user.sso_subject.as_deref(), Some("s-alice"));
        assert_eq!(a.user.display_name.as_deref(), Some("Alice"));
        assert_eq!(a.user.last_login_at, Some(5));
    }

    #[test]
    fn the_highest_role_wins_across_entry_and_groups() {
        let groups = [group("g-ops", "member"), group("g-admins", "admin")];
        let a = admit(&alice(&["g-ops", "g-admins"]), None, None, &groups, 0).unwrap();
        assert!(a.new);
        assert_eq!(a.user.role, "admin");
        assert_eq!(a.user.granted_role, None);
        assert_eq!(a.matched, ["g-ops", "g-admins"]);
        let a = admit(
            &alice(&["g-ops"]),
            None,
            Some(added("alice@example.com", "admin")),
            &groups,
            0,
        )
        .unwrap();
        assert_eq!(
            a.user.role, "admin",
            "the entry's admin beats the group's member"
        );
        let a = admit(
            &alice(&["g-admins"]),
            None,
            Some(added("alice@example.com", "member")),
            &groups,
            0,
        )
        .unwrap();
        assert_eq!(
            a.user.role, "admin",
            "the group's admin beats the entry's member"
        );
    }

    #[test]
    fn refusals() {
        let groups = [group("g-ops", "member")];
        assert_eq!(
            admit(&alice(&[]), None, None, &[], 0).unwrap_err(),
            Refusal::UnknownUser
        );
        assert_eq!(
            admit(&alice(&["g-other"]), None, None, &groups, 0).unwrap_err(),
            Refusal::NoMatchingGroup
        );
        let mut disabled = added("alice@example.com", "admin");
        disabled.disabled_at = Some(1);
        assert_eq!(
            admit(&alice(&["g-ops"]), None, Some(disabled), &groups, 0).unwrap_err(),
            Refusal::Disabled,
            "a disabled user stays out whatever their groups"
        );
        let mut other = added("alice@example.com", "admin");
        other.sso_issuer = Some("https://idp".into());
        other.sso_subject = Some("s-mallory".into());
        assert_eq!(
            admit(&alice(&[]), None, Some(other.clone()), &groups, 0).unwrap_err(),
            Refusal::IdentityTaken
        );
        // Linked at a provider no longer in use: linked again by email.
        other.sso_issuer = Some("https://old-idp".into());
        let a = admit(&alice(&[]), None, Some(other), &groups, 0).unwrap();
        assert_eq!(a.user.sso_issuer.as_deref(), Some("https://idp"));
        let mut overage = alice(&[]);
        overage.groups = None;
        overage.overage = true;
        assert_eq!(
            admit(&overage, None, None, &groups, 0).unwrap_err(),
            Refusal::GroupOverage
        );
        // A group-admitted user whose group was removed: no entry of their own.
        let mut grouped = added("alice@example.com", "member");
        grouped.granted_role = None;
        grouped.sso_subject = Some("s-alice".into());
        assert_eq!(
            admit(&alice(&["g-gone"]), Some(grouped), None, &groups, 0).unwrap_err(),
            Refusal::NoMatchingGroup
        );
    }

    #[test]
    fn a_user_without_email_is_named_by_username_then_subject() {
        let groups = [group("g", "member")];
        let mut id = alice(&["g"]);
        id.email = None;
        id.username = Some("alice@corp.example".into());
        assert_eq!(
            admit(&id, None, None, &groups, 0).unwrap().user.name,
            "alice@corp.example"
        );
        id.username = None;
        assert_eq!(
            admit(&id, None, None, &groups, 0).unwrap().user.name,
            "sub:s-alice"
        );
    }
}
