//! Who acts on a work order: a scope in the tree district > town > committee > estate, and optionally the
//! name of the person or crew acting inside it. Written `district`, `town`, `committee:C03` or
//! `estate:E012`, optionally followed by `/name` (`estate:E012/property`, `town/task-force`). Parsed and
//! formatted here only: the twin's responders build principals with it and the API parses them with it.

use std::fmt;
use std::str::FromStr;

use crate::orders::Role;

/// The longest actor name accepted (it is stored in every transition the actor makes).
pub const MAX_ACTOR_LEN: usize = 64;

/// A principal's scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    District,
    Town,
    /// A neighbourhood committee by id (`C03`).
    Committee(String),
    /// An estate by id (`E012`).
    Estate(String),
}

impl Scope {
    /// Whether this scope reaches a work order of `area` (an estate id, or a road's: the town's), given the
    /// committee `area` belongs to when it is an estate: district and town reach everything, a committee
    /// its estates, an estate itself. The API filters and refuses by it; drill scripts are checked by it.
    pub fn reaches(&self, area: &str, committee_of_area: Option<&str>) -> bool {
        match self {
            Scope::District | Scope::Town => true,
            Scope::Committee(c) => committee_of_area == Some(c.as_str()),
            Scope::Estate(e) => e == area,
        }
    }
}

/// A scope and, optionally, who acts in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub scope: Scope,
    pub actor: Option<String>,
}

/// Why a principal was refused; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal `{given}`: {why}; expected district, town, committee:<Cnn> or estate:<Ennn>, optionally followed by /<name>")]
pub struct BadPrincipal {
    pub given: String,
    pub why: String,
}

impl Principal {
    pub fn new(scope: Scope, actor: Option<&str>) -> Principal {
        Principal { scope, actor: actor.map(str::to_string) }
    }

    pub fn committee(id: &str, actor: &str) -> Principal {
        Principal::new(Scope::Committee(id.to_string()), Some(actor))
    }

    pub fn estate(id: &str, actor: &str) -> Principal {
        Principal::new(Scope::Estate(id.to_string()), Some(actor))
    }

    pub fn town(actor: &str) -> Principal {
        Principal::new(Scope::Town, Some(actor))
    }

    /// The role this principal plays: its name is a role's ([`Role::actor`]) at a scope where that role
    /// works (`committee:C03/cadre`, `estate:E012/property`, `town/housing`). Others (`town/dispatcher`, a
    /// bare scope) play none: they act for the scope as a whole.
    pub fn role(&self) -> Option<Role> {
        self.actor.as_deref().and_then(Role::of_actor).filter(|r| r.works_at(&self.scope))
    }

    /// An evaluator of a drill (`town/evaluator-ana`): sees what its scope sees, records observations,
    /// and acts on no order.
    pub fn is_evaluator(&self) -> bool {
        self.actor.as_deref().is_some_and(|a| a == "evaluator" || a.starts_with("evaluator-"))
    }

    /// Whether this principal may report a joint visit's part for `role`: its own part, or any part for a
    /// principal that plays no role (an operations centre acting for the scope).
    pub fn may_report_for(&self, role: Role) -> bool {
        self.role().is_none_or(|r| r == role)
    }
}

/// `X` followed by one or more ASCII digits (`C03`, `E012`).
fn is_id(s: &str, letter: char) -> bool {
    s.strip_prefix(letter).is_some_and(|d| !d.is_empty() && d.len() <= 6 && d.bytes().all(|b| b.is_ascii_digit()))
}

fn is_actor(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ACTOR_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl FromStr for Principal {
    type Err = BadPrincipal;

    fn from_str(s: &str) -> Result<Principal, BadPrincipal> {
        let bad = |why: &str| BadPrincipal { given: s.chars().take(80).collect(), why: why.to_string() };
        let (scope, actor) = match s.split_once('/') {
            Some((scope, name)) => {
                if !is_actor(name) {
                    return Err(bad(&format!("the name after `/` must be 1 to {MAX_ACTOR_LEN} ASCII letters, digits, `-`, `_` or `.`")));
                }
                (scope, Some(name))
            }
            None => (s, None),
        };
        let scope = match scope.split_once(':') {
            None if scope == "district" => Scope::District,
            None if scope == "town" => Scope::Town,
            Some(("committee", c)) if is_id(c, 'C') => Scope::Committee(c.to_string()),
            Some(("estate", e)) if is_id(e, 'E') => Scope::Estate(e.to_string()),
            Some(("committee" | "estate", _)) => return Err(bad("a committee id is C and digits, an estate id E and digits")),
            _ => return Err(bad("unknown scope")),
        };
        Ok(Principal::new(scope, actor))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::District => f.write_str("district"),
            Scope::Town => f.write_str("town"),
            Scope::Committee(c) => write!(f, "committee:{c}"),
            Scope::Estate(e) => write!(f, "estate:{e}"),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.scope)?;
        if let Some(a) = &self.actor {
            write!(f, "/{a}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Principal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Principal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Principal, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_formats() {
        for s in ["district", "town", "committee:C03", "estate:E012", "estate:E012/property", "town/task-force", "committee:C01/cadre"] {
            let p: Principal = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert_eq!("estate:E012/property".parse::<Principal>().unwrap(), Principal::estate("E012", "property"));
    }

    #[test]
    fn a_principal_named_for_a_role_at_its_scope_plays_it() {
        let role = |s: &str| s.parse::<Principal>().unwrap().role();
        assert_eq!(role("committee:C03/cadre"), Some(Role::Committee));
        assert_eq!(role("estate:E012/property"), Some(Role::Property));
        assert_eq!(role("estate:E012/owners"), Some(Role::Owners));
        assert_eq!(role("town/housing"), Some(Role::Housing));
        assert_eq!(role("town/public-security"), Some(Role::PublicSecurity));
        assert_eq!(role("town/task-force"), Some(Role::TaskForce));
        // Not a role's name, or not where that role works.
        for s in ["town/dispatcher", "town", "estate:E012/cadre", "town/property", "committee:C03/housing", "estate:E012"] {
            assert_eq!(role(s), None, "{s}");
        }
        for r in Role::ALL {
            assert_eq!(Role::of_actor(r.actor()), Some(r));
        }
        let housing: Principal = "town/housing".parse().unwrap();
        assert!(housing.may_report_for(Role::Housing) && !housing.may_report_for(Role::PublicSecurity));
        assert!(Principal::town("dispatcher").may_report_for(Role::PublicSecurity));
        assert!(Principal::town("evaluator-ana").is_evaluator() && !Principal::town("evaluators").is_evaluator());
    }

    #[test]
    fn refuses_what_is_not_a_principal() {
        for s in ["", "root", "estate:", "estate:12", "committee:E01", "town/", "district/<script>", "town/a b", "estate:E012/x/y"] {
            let e = s.parse::<Principal>().unwrap_err();
            assert!(e.to_string().contains("expected district"), "{s}: {e}");
        }
        let long = format!("town/{}", "a".repeat(MAX_ACTOR_LEN + 1));
        assert!(long.parse::<Principal>().is_err());
    }
}
