//! The work-order wire types: what the core publishes about an order (a [`Notice`] on
//! `orders/{area}/{id}/{action}`), what a person may do to one ([`Action`]), its states and loops, and the
//! roles that take orders. The twin's responders read notices and send actions; the core's state machine
//! and its store live in `towntwin-core`.

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// Who a work order goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// 居委会: the residents' committee of the estate.
    Committee,
    /// 物业: the estate's property manager.
    Property,
    /// 城管: city management (law enforcement).
    CityManagement,
    /// The platform's device maintenance contractor.
    Maintenance,
    /// The town's fire-safety office.
    FireSafety,
    /// The town task force (large loop).
    TaskForce,
    /// 业委会 and owners' volunteers of the estate.
    Owners,
    /// 房管: the town's housing office (rentals, renovation permits).
    Housing,
    /// 民政: civil affairs (the elderly living alone, welfare).
    CivilAffairs,
    /// 公安: the police station.
    PublicSecurity,
    /// 市场监管: market supervision (shops, street trading).
    MarketSupervision,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 11] = [
        Role::Committee,
        Role::Property,
        Role::CityManagement,
        Role::Maintenance,
        Role::FireSafety,
        Role::TaskForce,
        Role::Owners,
        Role::Housing,
        Role::CivilAffairs,
        Role::PublicSecurity,
        Role::MarketSupervision,
    ];

    /// The name its people act under in a principal (`committee:C03/cadre`, `town/city-management`): the
    /// twin's crews use it, and a principal named so plays the role ([`crate::principal::Principal::role`]).
    pub fn actor(self) -> &'static str {
        match self {
            Role::Committee => "cadre",
            Role::CityManagement => "city-management",
            Role::FireSafety => "fire-safety",
            Role::TaskForce => "task-force",
            Role::CivilAffairs => "civil-affairs",
            Role::PublicSecurity => "public-security",
            Role::MarketSupervision => "market-supervision",
            Role::Property => "property",
            Role::Maintenance => "maintenance",
            Role::Owners => "owners",
            Role::Housing => "housing",
        }
    }

    /// The role whose people act under `name` ([`Role::actor`]).
    pub fn of_actor(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.actor() == name)
    }

    /// Whether the role's people work at this scope: the committee's cadres at a committee, the property
    /// manager and the owners at an estate, the departments and the task force at the town (or district).
    pub fn works_at(self, scope: &crate::principal::Scope) -> bool {
        use crate::principal::Scope;
        match self {
            Role::Committee => matches!(scope, Scope::Committee(_)),
            Role::Property | Role::Owners => matches!(scope, Scope::Estate(_)),
            _ => matches!(scope, Scope::Town | Scope::District),
        }
    }

    /// The crew's name in scenario files and summaries (`city_management`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Committee => "committee",
            Role::Property => "property",
            Role::CityManagement => "city_management",
            Role::Maintenance => "maintenance",
            Role::FireSafety => "fire_safety",
            Role::TaskForce => "task_force",
            Role::Owners => "owners",
            Role::Housing => "housing",
            Role::CivilAffairs => "civil_affairs",
            Role::PublicSecurity => "public_security",
            Role::MarketSupervision => "market_supervision",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Created,
    Dispatched,
    Accepted,
    InProgress,
    Resolved,
    Verified,
    Closed,
    Returned,
    Cancelled,
}

impl State {
    pub fn is_open(self) -> bool {
        !matches!(self, State::Closed | State::Cancelled)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Dispatched => "dispatched",
            State::Accepted => "accepted",
            State::InProgress => "in_progress",
            State::Resolved => "resolved",
            State::Verified => "verified",
            State::Closed => "closed",
            State::Returned => "returned",
            State::Cancelled => "cancelled",
        }
    }
}

/// The three closed loops (三个闭环).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Loop {
    /// Inside the estate: committee, property, owners.
    Small,
    /// The neighbourhood and the town's functional departments.
    Medium,
    /// The town task force, closed on site.
    Large,
}

impl Loop {
    pub fn as_str(self) -> &'static str {
        match self {
            Loop::Small => "small",
            Loop::Medium => "medium",
            Loop::Large => "large",
        }
    }

    pub fn next(self) -> Option<Loop> {
        match self {
            Loop::Small => Some(Loop::Medium),
            Loop::Medium => Some(Loop::Large),
            Loop::Large => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    Dispatch,
    Accept,
    Start,
    Resolve,
    /// Failed on site: the policy may escalate.
    Fail {
        reason: String,
    },
    Verify,
    Close,
    Return {
        reason: String,
    },
    Reopen {
        reason: String,
    },
    Cancel {
        reason: String,
    },
    Escalate {
        reason: String,
    },
    /// The committee blows the whistle: straight to the policy's whistle loop.
    Whistle {
        reason: String,
    },
    /// One party of a joint visit reports its part done on site. The order is resolved when every one of its
    /// assignees has reported; until then it stays in progress.
    Report {
        role: Role,
    },
}

/// When a committee blows the whistle (居村吹哨) on an order of its estates that is still in the small loop, by
/// the policy's `whistle` (per rule). The twin's committees follow it; a person may whistle whenever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WhistleWhen {
    /// As soon as the committee has noticed the order: a problem the estate cannot settle by its nature.
    AtOnce,
    /// After this many failed visits in the small loop.
    AfterFails(u32),
    /// When the order is still in the small loop this many hours after it was created.
    AfterHours(u32),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Dispatch => "dispatch",
            Action::Accept => "accept",
            Action::Start => "start",
            Action::Resolve => "resolve",
            Action::Fail { .. } => "fail",
            Action::Verify => "verify",
            Action::Close => "close",
            Action::Return { .. } => "return",
            Action::Reopen { .. } => "reopen",
            Action::Cancel { .. } => "cancel",
            Action::Escalate { .. } => "escalate",
            Action::Whistle { .. } => "whistle",
            Action::Report { .. } => "report",
        }
    }
    /// The reason an action carries, if its kind takes one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Action::Fail { reason }
            | Action::Return { reason }
            | Action::Reopen { reason }
            | Action::Cancel { reason }
            | Action::Escalate { reason }
            | Action::Whistle { reason } => Some(reason),
            _ => None,
        }
    }
}

/// One appended transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent {
    pub order: u64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub from: Option<State>,
    pub to: State,
    pub level: Loop,
    pub reason: Option<String>,
}

/// A transition as the core publishes it on `orders/{area}/{id}/{action}`: the event, and the order's
/// place after it (area, rule, estate, who has it now). The twin's responders take their dispatches from
/// these; observers get the whole story of an order from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    #[serde(flatten)]
    pub event: OrderEvent,
    pub area: String,
    pub rule: String,
    /// What the order is about within its area (a flat, a device), as the rule keys it.
    #[serde(default)]
    pub subject: String,
    pub estate: Option<u16>,
    pub assignee: Vec<Role>,
    /// A joint visit: every assignee goes, and the order is resolved when all have reported
    /// ([`Action::Report`]); otherwise the first assignee goes and the others are informed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joint: bool,
    /// The id of the event whose arrival caused this transition, when an event did (not an API action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Event times of the first and the latest sighting of the order's condition (what it is about, in
    /// time: see `truth::Detects::is_about`).
    #[serde(default)]
    pub first_seen: Millis,
    #[serde(default)]
    pub last_seen: Millis,
}

impl Notice {
    /// Where and when the order saw its condition.
    pub fn sighting(&self) -> crate::truth::Sighting<'_> {
        crate::truth::Sighting { area: &self.area, subject: &self.subject, first_seen: self.first_seen, last_seen: self.last_seen }
    }

    /// The MQTT topic this notice is published on.
    pub fn topic(&self) -> String {
        format!("{ORDERS_PREFIX}{}/{}/{}", self.area, self.event.order, self.event.action)
    }
}

/// Work-order transitions are published under `orders/{area}/{order id}/{action}`.
pub const ORDERS_PREFIX: &str = "orders/";
/// After each batch that carried a clock tick, the core publishes `{"now": <ms>}` here, after the batch's
/// transitions: everything up to that event time has been committed and published.
pub const WATERMARK_TOPIC: &str = "orders/watermark";

/// The body of a watermark: `{"now": <ms>}`.
pub fn watermark_body(now: Millis) -> Vec<u8> {
    format!("{{\"now\":{now}}}").into_bytes()
}

/// The event time a watermark's body carries; `None` for a body that is not one.
pub fn parse_watermark(body: &[u8]) -> Option<Millis> {
    #[derive(Deserialize)]
    struct Watermark {
        now: Millis,
    }
    serde_json::from_slice::<Watermark>(body).ok().map(|w| w.now)
}
