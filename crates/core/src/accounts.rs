//! Accounts and tenancy: emails, passwords, organization names, roles, and the rule deciding
//! which member may change which membership.

use crate::DomainError;
use crate::validation::{Invalid, clean_name};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use unicode_normalization::UnicodeNormalization;

/// Longest accepted email address (RFC 5321 path limit).
pub const EMAIL_LENGTH_MAX: usize = 254;
/// Shortest accepted password, in characters.
pub const PASSWORD_CHARS_MIN: usize = 10;
/// Longest accepted password, in bytes: argon2 hashes anything, but an unbounded input is a
/// cheap way to make the server hash megabytes per request.
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Longest organization name, in characters.
pub const ORGANIZATION_NAME_CHARS_MAX: usize = 200;

/// An email address, trimmed, in NFC and lowercased so `Ann@Example.com` and
/// `ann@example.com` are one account, and so are `josé@…` typed with a precomposed `é` and
/// with a combining accent. Only the structure is checked (one `@`, a dotted domain, no spaces
/// or controls); deliverability is not this type's business.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let composed: String = raw.trim().nfc().collect();
        // Lowercasing may decompose (`İ` becomes `i` and a combining dot): compose again.
        let email: String = composed.to_lowercase().nfc().collect();
        if email.is_empty() || email.len() > EMAIL_LENGTH_MAX {
            return Err(Invalid::new(
                "invalid_email",
                format!("must be 1 to {EMAIL_LENGTH_MAX} bytes long"),
            ));
        }
        let valid = match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.len() <= 64
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if !valid {
            return Err(Invalid::new(
                "invalid_email",
                "must be an email address like ann@example.com",
            ));
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plaintext password on its way to the hasher. `Debug` never prints it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Self, Invalid> {
        let chars = raw.chars().count();
        if chars < PASSWORD_CHARS_MIN {
            return Err(Invalid::new(
                "password_too_short",
                format!("must be at least {PASSWORD_CHARS_MIN} characters"),
            ));
        }
        if raw.len() > PASSWORD_BYTES_MAX {
            return Err(Invalid::new(
                "password_too_long",
                format!("must be at most {PASSWORD_BYTES_MAX} bytes"),
            ));
        }
        Ok(Self(raw))
    }

    /// The secret itself, only for the password hasher.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// An organization's display name: trimmed, 1..=200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OrganizationName(String);

impl OrganizationName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        clean_name(raw, ORGANIZATION_NAME_CHARS_MAX).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A member's role in an organization, strongest first: `owner > admin > member > viewer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Member, Role::Viewer];

    fn rank(self) -> u8 {
        match self {
            Role::Owner => 4,
            Role::Admin => 3,
            Role::Member => 2,
            Role::Viewer => 1,
        }
    }

    /// Whether this role includes everything `other` may do.
    pub fn at_least(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    /// Fails with [`DomainError::InsufficientRole`] unless this role is at least `required`.
    pub fn require(self, required: Role) -> Result<(), DomainError> {
        if self.at_least(required) {
            Ok(())
        } else {
            Err(DomainError::InsufficientRole {
                required,
                actual: self,
            })
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            "viewer" => Ok(Role::Viewer),
            _ => Err(Invalid::new(
                "invalid_role",
                "must be one of owner, admin, member, viewer",
            )),
        }
    }
}

/// What one member wants to do to another member's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    Add { role: Role },
    ChangeRole { from: Role, to: Role },
    Remove { role: Role },
}

/// Decides whether `actor` may make `change`. Rules:
/// - owners may do anything (the last-owner invariant is enforced separately, in the store);
/// - admins may add, change and remove admins, members and viewers, but may neither touch an
///   owner nor make anyone an owner;
/// - members and viewers may manage no one, except that anyone may leave (remove themselves).
pub fn authorize_membership_change(
    actor: Role,
    change: MembershipChange,
    actor_is_target: bool,
) -> Result<(), DomainError> {
    if actor_is_target && matches!(change, MembershipChange::Remove { .. }) {
        return Ok(());
    }
    actor.require(Role::Admin)?;
    if actor == Role::Owner {
        return Ok(());
    }
    let touches_owner = match change {
        MembershipChange::Add { role } | MembershipChange::Remove { role } => role == Role::Owner,
        MembershipChange::ChangeRole { from, to } => from == Role::Owner || to == Role::Owner,
    };
    if touches_owner {
        return Err(DomainError::InsufficientRole {
            required: Role::Owner,
            actual: actor,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_structurally_checked() {
        assert_eq!(
            Email::parse("  Ann@Example.COM ").map(|e| e.0),
            Ok("ann@example.com".into())
        );
        assert_eq!(
            Email::parse("Jose\u{301}@example.com").map(|e| e.0),
            Ok("jos\u{e9}@example.com".into())
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "a@b@c.d",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn passwords_have_a_minimum_length_and_never_print() {
        assert!(Password::parse("short".into()).is_err());
        let password = Password::parse("correct horse battery".into()).map_err(|e| e.code);
        assert!(password.is_ok());
        assert!(!format!("{password:?}").contains("horse"));
        assert!(Password::parse("x".repeat(PASSWORD_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn roles_are_ordered_owner_admin_member_viewer() {
        assert!(Role::Owner.at_least(Role::Admin));
        assert!(Role::Admin.at_least(Role::Member));
        assert!(Role::Member.at_least(Role::Viewer));
        assert!(!Role::Viewer.at_least(Role::Member));
    }

    #[test]
    fn admins_cannot_touch_owners_and_members_cannot_manage() {
        use MembershipChange::*;
        let admin = Role::Admin;
        assert!(authorize_membership_change(admin, Add { role: Role::Admin }, false).is_ok());
        assert!(authorize_membership_change(admin, Add { role: Role::Owner }, false).is_err());
        let demote_owner = ChangeRole {
            from: Role::Owner,
            to: Role::Admin,
        };
        assert!(authorize_membership_change(admin, demote_owner, false).is_err());
        assert!(authorize_membership_change(Role::Owner, demote_owner, false).is_ok());
        let remove_viewer = Remove { role: Role::Viewer };
        assert!(authorize_membership_change(Role::Member, remove_viewer, false).is_err());
        assert!(authorize_membership_change(Role::Viewer, remove_viewer, true).is_ok());
    }
}
