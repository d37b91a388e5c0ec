//! `wardenctl policy set|get`: the limits (rate, tokens, concurrency, budget) of a virtual
//! key, a JWT subject, a model or the whole gateway, and their current usage; and the IP and
//! origin lists of a key, a subject or the gateway, with the gateway's CORS
//! ([`super::access`]).
//!
//! Also home to what other commands borrow: the limit flags ([`PolicyArgs`], flattened into
//! `token issue` and `vkey create`) and the views of a policy with its usage
//! ([`policy_fields`], [`policy_json`]).

use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;

use super::access::{AccessArgs, access_fields, access_json};
use crate::flags::parse_usd;
use crate::output::{self, Fields, Printer};
use crate::session::Session;

/// The budget period sent when `--max-budget` is given without `--budget-period`.
const DEFAULT_BUDGET_PERIOD: Duration = Duration::from_secs(30 * 86_400);
/// The shortest `--budget-period` accepted.
const MIN_BUDGET_PERIOD: Duration = Duration::from_secs(60);

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing flattened clap args buys nothing"
)]
pub enum PolicyCommand {
    /// Set the policy of a virtual key, a JWT subject, a model or the whole gateway.
    ///
    /// Given limit flags (or --clear), replaces the target's limits: a limit left out is
    /// set to 0 = unlimited. Given access flags (or --clear-access), replaces its IP and
    /// origin lists (and, with --global, CORS). At least one flag is required.
    #[command(group(
        ArgGroup::new("change")
            .required(true)
            .multiple(true)
            .args(["rpm", "tpm", "max_parallel", "max_tokens", "max_budget", "budget_period", "clear",
                   "allow_ip", "allow_origin", "cors_method", "cors_header", "cors_expose_header",
                   "cors_max_age", "cors_allow_credentials", "clear_access"])
    ))]
    Set {
        #[command(flatten, next_help_heading = "Target (exactly one)")]
        target: TargetArgs,
        #[command(
            flatten,
            next_help_heading = "Limits (a limit left out is set to 0 = unlimited)"
        )]
        policy: PolicyArgs,
        /// Remove every limit of the target (sends all zeros).
        #[arg(long, conflicts_with = "policy_flags")]
        clear: bool,
        #[command(flatten, next_help_heading = "Access (IP allow-list, origins, CORS)")]
        access: AccessArgs,
    },
    /// Show the policy of a target and its current usage.
    Get {
        #[command(flatten, next_help_heading = "Target (exactly one)")]
        target: TargetArgs,
    },
}

/// Limits of a virtual key, a subject, a model or the gateway. `0` means unlimited.
#[derive(Debug, Clone, Default, Args)]
#[group(id = "policy_flags", multiple = true)]
pub struct PolicyArgs {
    /// Requests per minute [default: unlimited].
    #[arg(long, value_name = "N")]
    rpm: Option<u64>,
    /// Tokens per minute [default: unlimited].
    #[arg(long, value_name = "N")]
    tpm: Option<u64>,
    /// Requests in flight at once [default: unlimited].
    #[arg(long, value_name = "N")]
    max_parallel: Option<u32>,
    /// Ceiling on the completion tokens one request may ask for; larger `max_tokens` are
    /// lowered to it [default: unlimited].
    #[arg(long, value_name = "N")]
    max_tokens: Option<u64>,
    /// Spend ceiling in USD per budget period, e.g. `25` or `12.50` [default: unlimited].
    #[arg(
        long,
        value_name = "USD",
        value_parser = parse_usd,
        allow_negative_numbers = true
    )]
    max_budget: Option<f64>,
    /// The budget's period, e.g. `30d`, `7d`, `12h`; at least 1m [default: 30d].
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_period,
        requires = "max_budget"
    )]
    budget_period: Option<Duration>,
}

impl PolicyArgs {
    /// Whether any limit flag was given.
    fn is_empty(&self) -> bool {
        self.rpm.is_none()
            && self.tpm.is_none()
            && self.max_parallel.is_none()
            && self.max_tokens.is_none()
            && self.max_budget.is_none()
            && self.budget_period.is_none()
    }

    /// The policy to send: limits not given are `0` (unlimited); a budget without a period
    /// gets [`DEFAULT_BUDGET_PERIOD`].
    fn to_policy(&self) -> pb::Policy {
        let max_budget_usd = self.max_budget.unwrap_or(0.0);
        let period = match self.budget_period {
            Some(period) => period,
            None if max_budget_usd > 0.0 => DEFAULT_BUDGET_PERIOD,
            None => Duration::ZERO,
        };
        pb::Policy {
            rpm: self.rpm.unwrap_or(0),
            tpm: self.tpm.unwrap_or(0),
            max_parallel: self.max_parallel.unwrap_or(0),
            max_budget_usd,
            budget_period_seconds: period.as_secs(),
            max_tokens: self.max_tokens.unwrap_or(0),
        }
    }

    /// `Some(policy)` when any limit flag was given, for `token issue` and `vkey create`.
    pub fn to_optional_policy(&self) -> Option<pb::Policy> {
        (!self.is_empty()).then(|| self.to_policy())
    }
}

/// Whose policy: exactly one of these.
#[derive(Debug, Clone, Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct TargetArgs {
    /// A virtual key, by id.
    #[arg(long, value_name = "ID")]
    vkey: Option<String>,
    /// A JWT subject: all of its tokens share the policy.
    #[arg(long, value_name = "SUBJECT")]
    subject: Option<String>,
    /// A model alias.
    #[arg(long, value_name = "ALIAS")]
    model: Option<String>,
    /// Every request through the gateway.
    #[arg(long)]
    global: bool,
}

impl TargetArgs {
    fn to_target(&self) -> pb::PolicyTarget {
        use pb::policy_target::Target;
        let target = if let Some(id) = &self.vkey {
            Target::VirtualKey(id.clone())
        } else if let Some(subject) = &self.subject {
            Target::Subject(subject.clone())
        } else if let Some(alias) = &self.model {
            Target::Model(alias.clone())
        } else {
            Target::Global(true)
        };
        pb::PolicyTarget {
            target: Some(target),
        }
    }
}

/// Runs one `policy` subcommand.
pub async fn run(session: &Session, out: Printer, command: PolicyCommand) -> anyhow::Result<()> {
    let (info, target) = match command {
        PolicyCommand::Set {
            target,
            policy,
            clear,
            access,
        } => {
            let target = target.to_target();
            let access = access.to_optional_access();
            // Access flags alone leave the limits as they are.
            let limits = (clear || !policy.is_empty() || access.is_none())
                .then(|| chosen_policy(&policy, clear));
            let request = pb::SetPolicyRequest {
                target: Some(target.clone()),
                policy: limits,
                access,
            };
            let mut client = session.client.clone();
            (session.call(client.set_policy(request)).await?, target)
        }
        PolicyCommand::Get { target } => {
            let target = target.to_target();
            (get(session, &target).await?, target)
        }
    };
    let mut fields = Fields::new();
    policy_fields(&mut fields, &info, &target);
    out.fields(&fields, &policy_json(&info, &target))?;
    Ok(())
}

/// What `policy set` sends: all zeros with `--clear`, else the limit flags.
fn chosen_policy(policy: &PolicyArgs, clear: bool) -> pb::Policy {
    if clear {
        pb::Policy::default()
    } else {
        policy.to_policy()
    }
}

/// The policy of `target` and its current usage.
pub async fn get(session: &Session, target: &pb::PolicyTarget) -> anyhow::Result<pb::PolicyInfo> {
    let request = pb::GetPolicyRequest {
        target: Some(target.clone()),
    };
    let mut client = session.client.clone();
    session.call(client.get_policy(request)).await
}

/// The human view of a policy and its usage. `requested` names the target when the
/// response does not.
pub fn policy_fields(fields: &mut Fields, info: &pb::PolicyInfo, requested: &pb::PolicyTarget) {
    let target = info.target.as_ref().unwrap_or(requested);
    let policy = info.policy.unwrap_or_default();
    fields.push("policy of", target_name(target));
    fields.push("rpm", limit(policy.rpm));
    fields.push("tpm", limit(policy.tpm));
    fields.push("max parallel", limit(policy.max_parallel.into()));
    fields.push("max tokens", limit(policy.max_tokens));
    fields.push("budget", budget(&policy));
    access_fields(fields, info.access.as_ref());
    let usage = info.usage.clone().unwrap_or_default();
    if !usage.available {
        let reason = usage.unavailable_reason.trim();
        let text = if reason.is_empty() {
            "unavailable".to_owned()
        } else {
            format!("unavailable ({reason})")
        };
        fields.push("usage", text);
        return;
    }
    let left = |limit: u64, remaining: u64| {
        if limit == 0 {
            "unlimited".to_owned()
        } else {
            remaining.to_string()
        }
    };
    fields.push("requests left", left(policy.rpm, usage.requests_remaining));
    fields.push("tokens left", left(policy.tpm, usage.tokens_remaining));
    fields.push("in flight", usage.in_flight.to_string());
    let ceiling = if policy.max_budget_usd > 0.0 {
        output::usd(policy.max_budget_usd)
    } else {
        "unlimited".to_owned()
    };
    fields.push(
        "spent",
        format!("{} of {ceiling}", output::usd(usage.spent_usd)),
    );
    fields.push("period ends", output::timestamp(usage.period_ends_at));
}

/// The JSON view of a policy and its usage: `target`, `policy` and `usage` objects with the
/// proto's field names, numbers as numbers.
pub fn policy_json(info: &pb::PolicyInfo, requested: &pb::PolicyTarget) -> Value {
    use pb::policy_target::Target;
    let target = match &info.target.as_ref().unwrap_or(requested).target {
        Some(Target::VirtualKey(id)) => json!({ "virtual_key": id }),
        Some(Target::Subject(subject)) => json!({ "subject": subject }),
        Some(Target::Model(alias)) => json!({ "model": alias }),
        Some(Target::Global(global)) => json!({ "global": global }),
        None => Value::Null,
    };
    let p = info.policy.unwrap_or_default();
    let u = info.usage.clone().unwrap_or_default();
    json!({
        "target": target,
        "access": access_json(info.access.as_ref()),
        "policy": {
            "rpm": p.rpm, "tpm": p.tpm, "max_parallel": p.max_parallel, "max_tokens": p.max_tokens,
            "max_budget_usd": p.max_budget_usd,
            "budget_period_seconds": p.budget_period_seconds,
        },
        "usage": {
            "available": u.available, "unavailable_reason": u.unavailable_reason,
            "requests_remaining": u.requests_remaining,
            "tokens_remaining": u.tokens_remaining, "in_flight": u.in_flight,
            "spent_usd": u.spent_usd, "period_ends_at": u.period_ends_at,
        },
    })
}

/// `virtual key vk_…`, `subject alice`, `model gpt-4o`, `global`.
fn target_name(target: &pb::PolicyTarget) -> String {
    use pb::policy_target::Target;
    match &target.target {
        Some(Target::VirtualKey(id)) => format!("virtual key {id}"),
        Some(Target::Subject(subject)) => format!("subject {subject}"),
        Some(Target::Model(alias)) => format!("model {alias}"),
        Some(Target::Global(_)) => "global".to_owned(),
        None => "-".to_owned(),
    }
}

/// A limit cell: `unlimited` for `0`.
fn limit(value: u64) -> String {
    if value == 0 {
        "unlimited".to_owned()
    } else {
        value.to_string()
    }
}

/// `$25.00 per 30d`, or `unlimited`.
fn budget(policy: &pb::Policy) -> String {
    if policy.max_budget_usd > 0.0 {
        let period = match policy.budget_period_seconds {
            0 => DEFAULT_BUDGET_PERIOD.as_secs(),
            seconds => seconds,
        };
        format!(
            "{} per {}",
            output::usd(policy.max_budget_usd),
            output::span(period)
        )
    } else {
        "unlimited".to_owned()
    }
}

/// `--budget-period`: a humantime duration of at least one minute.
fn parse_period(raw: &str) -> Result<Duration, String> {
    let period = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if period < MIN_BUDGET_PERIOD {
        return Err("the budget period must be at least 1m".to_owned());
    }
    Ok(period)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::probe;

    fn parse(args: &[&str]) -> Result<PolicyCommand, clap::Error> {
        probe::subcommand(args)
    }

    fn set(args: &[&str]) -> Result<(pb::PolicyTarget, pb::Policy), clap::Error> {
        let argv: Vec<&str> = ["set"].iter().chain(args).copied().collect();
        match parse(&argv)? {
            PolicyCommand::Set {
                target,
                policy,
                clear,
                ..
            } => Ok((target.to_target(), chosen_policy(&policy, clear))),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// The policy `token issue` or `vkey create` sends for these limit flags.
    fn optional_policy(args: &[&str]) -> Result<Option<pb::Policy>, clap::Error> {
        probe::flags::<PolicyArgs>(args).map(|p| p.to_optional_policy())
    }

    #[test]
    fn parses_budgets() {
        // A negative amount reaches the parser (and its message), not clap's "unexpected
        // argument".
        let err = parse(&["set", "--global", "--max-budget", "-3"]).unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
    }

    #[test]
    fn parses_budget_periods() {
        assert_eq!(
            parse_period("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_period("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_period("12h").unwrap(), Duration::from_secs(43_200));
        assert!(parse_period("59s").is_err());
        assert!(parse_period("0s").is_err());
        assert!(parse_period("monthly").is_err());
    }

    #[test]
    fn sends_a_policy_only_when_a_limit_flag_is_given() {
        assert_eq!(optional_policy(&[]).unwrap(), None);
        assert_eq!(
            optional_policy(&["--rpm", "0"]).unwrap(),
            Some(pb::Policy::default()),
            "an explicit 0 still sends a policy"
        );
        let p = optional_policy(&["--rpm", "60", "--tpm", "1000", "--max-parallel", "4"])
            .unwrap()
            .unwrap();
        assert_eq!((p.rpm, p.tpm, p.max_parallel), (60, 1000, 4));
        assert_eq!(p.budget_period_seconds, 0);
        let p = optional_policy(&["--max-budget", "25"]).unwrap().unwrap();
        assert!((p.max_budget_usd - 25.0).abs() < f64::EPSILON);
        assert_eq!(p.budget_period_seconds, 30 * 86_400);
        let p = optional_policy(&["--max-budget", "12.50", "--budget-period", "7d"])
            .unwrap()
            .unwrap();
        assert!((p.max_budget_usd - 12.5).abs() < f64::EPSILON);
        assert_eq!(p.budget_period_seconds, 7 * 86_400);
        // A period without a budget means nothing.
        assert!(optional_policy(&["--budget-period", "7d"]).is_err());
    }

    #[test]
    fn policy_commands_need_exactly_one_target() {
        use pb::policy_target::Target;
        let target = |args: &[&str]| set(args).map(|(t, _)| t.target);
        assert_eq!(
            target(&["--vkey", "vk_1", "--rpm", "5"]).unwrap(),
            Some(Target::VirtualKey("vk_1".into()))
        );
        assert_eq!(
            target(&["--subject", "alice", "--rpm", "5"]).unwrap(),
            Some(Target::Subject("alice".into()))
        );
        assert_eq!(
            target(&["--model", "gpt", "--rpm", "5"]).unwrap(),
            Some(Target::Model("gpt".into()))
        );
        assert_eq!(
            target(&["--global", "--rpm", "5"]).unwrap(),
            Some(Target::Global(true))
        );
        assert!(set(&["--rpm", "5"]).is_err(), "no target");
        assert!(set(&["--vkey", "a", "--global", "--rpm", "5"]).is_err());
        assert!(set(&["--vkey", "a", "--subject", "b", "--rpm", "5"]).is_err());
        match parse(&["get", "--model", "m"]).unwrap() {
            PolicyCommand::Get { target } => {
                assert_eq!(target.to_target().target, Some(Target::Model("m".into())));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["get"]).is_err());
        assert!(parse(&["get", "--global", "--model", "m"]).is_err());
    }

    #[test]
    fn policy_set_needs_a_limit_or_clear() {
        assert!(set(&["--global"]).is_err());
        let (_, policy) = set(&["--global", "--clear"]).unwrap();
        assert_eq!(policy, pb::Policy::default());
        assert!(set(&["--global", "--clear", "--rpm", "1"]).is_err());
        let (_, policy) = set(&["--subject", "s", "--tpm", "100"]).unwrap();
        assert_eq!(
            policy,
            pb::Policy {
                tpm: 100,
                ..pb::Policy::default()
            },
            "limits left out are sent as 0"
        );
    }

    fn sample_info() -> pb::PolicyInfo {
        pb::PolicyInfo {
            target: Some(pb::PolicyTarget {
                target: Some(pb::policy_target::Target::VirtualKey("vk_1".into())),
            }),
            policy: Some(pb::Policy {
                rpm: 60,
                tpm: 0,
                max_parallel: 4,
                max_budget_usd: 25.0,
                budget_period_seconds: 30 * 86_400,
                max_tokens: 0,
            }),
            usage: Some(pb::Usage {
                available: true,
                unavailable_reason: String::new(),
                requests_remaining: 58,
                tokens_remaining: 0,
                in_flight: 1,
                spent_usd: 1.5,
                period_ends_at: 1_700_000_000,
            }),
            access: None,
        }
    }

    #[test]
    fn renders_policies() {
        let info = sample_info();
        let requested = pb::PolicyTarget::default();
        let mut fields = Fields::new();
        policy_fields(&mut fields, &info, &requested);
        assert_eq!(
            fields.render(),
            "policy of:      virtual key vk_1\n\
             rpm:            60\n\
             tpm:            unlimited\n\
             max parallel:   4\nmax tokens:     unlimited\n\
             budget:         $25.00 per 30d\n\
             requests left:  58\n\
             tokens left:    unlimited\n\
             in flight:      1\n\
             spent:          $1.50 of $25.00\n\
             period ends:    2023-11-14T22:13:20Z\n"
        );

        let info = pb::PolicyInfo {
            target: None,
            policy: Some(pb::Policy::default()),
            usage: Some(pb::Usage {
                unavailable_reason: "redis not configured".into(),
                ..pb::Usage::default()
            }),
            access: None,
        };
        let requested = pb::PolicyTarget {
            target: Some(pb::policy_target::Target::Global(true)),
        };
        let mut fields = Fields::new();
        policy_fields(&mut fields, &info, &requested);
        assert_eq!(
            fields.render(),
            "policy of:     global\n\
             rpm:           unlimited\n\
             tpm:           unlimited\n\
             max parallel:  unlimited\n\
             max tokens:    unlimited\n\
             budget:        unlimited\n\
             usage:         unavailable (redis not configured)\n"
        );
    }

    #[test]
    fn policy_json_has_numbers() {
        let json = policy_json(&sample_info(), &pb::PolicyTarget::default());
        assert_eq!(json["target"], json!({ "virtual_key": "vk_1" }));
        assert_eq!(json["policy"]["rpm"], 60);
        assert_eq!(json["policy"]["max_parallel"], 4);
        assert_eq!(json["policy"]["max_budget_usd"], 25.0);
        assert_eq!(json["policy"]["budget_period_seconds"], 2_592_000);
        assert_eq!(json["usage"]["available"], true);
        assert_eq!(json["usage"]["requests_remaining"], 58);
        assert_eq!(json["usage"]["spent_usd"], 1.5);
        assert_eq!(json["usage"]["period_ends_at"], 1_700_000_000);
    }
}
