//! `wardenctl model …`: model aliases, their prices (for budgets), fallbacks and further
//! deployments.

use clap::Subcommand;
use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;

use crate::flags::{list_item, parse_usd};
use crate::output::{self, Printer, Rows};
use crate::paging::list_all;
use crate::session::Session;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Add a model alias routed to a provider.
    Add {
        alias: String,
        #[arg(long)]
        provider: String,
        /// Model name sent upstream [default: the alias].
        #[arg(long)]
        upstream_model: Option<String>,
        /// Model aliases tried in order when every key of this model's provider is
        /// unavailable, comma-separated.
        #[arg(
            long = "fallback",
            value_name = "ALIASES",
            value_delimiter = ',',
            value_parser = list_item,
            num_args = 1
        )]
        fallbacks: Vec<String>,
        /// Price of input tokens in USD per million tokens, for budgets, e.g. `2.50`.
        #[arg(
            long,
            value_name = "USD_PER_MTOK",
            value_parser = parse_usd,
            allow_negative_numbers = true
        )]
        input_price: Option<f64>,
        /// Price of output tokens in USD per million tokens, for budgets, e.g. `10`.
        #[arg(
            long,
            value_name = "USD_PER_MTOK",
            value_parser = parse_usd,
            allow_negative_numbers = true
        )]
        output_price: Option<f64>,
    },
    /// List model aliases.
    #[command(visible_alias = "ls")]
    List,
    /// Remove a model alias.
    #[command(visible_alias = "rm")]
    Remove { alias: String },
    /// Further deployments of an alias (other providers or upstream models answering for
    /// it), chosen per request by weight.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Add (or re-weight) a deployment; naming the alias's own provider and upstream model
    /// re-weights its first deployment.
    Add {
        alias: String,
        #[arg(long)]
        provider: String,
        /// Model name sent upstream [default: the alias].
        #[arg(long)]
        upstream_model: Option<String>,
        /// Relative weight, 1 to 1000 [default: 1].
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Remove a further deployment.
    #[command(visible_alias = "rm")]
    Remove {
        alias: String,
        #[arg(long)]
        provider: String,
        #[arg(long)]
        upstream_model: Option<String>,
    },
}

/// Runs one `model` subcommand.
pub async fn run(session: &Session, out: Printer, command: ModelCommand) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    match command {
        ModelCommand::Add {
            alias,
            provider,
            upstream_model,
            fallbacks,
            input_price,
            output_price,
        } => {
            let request = pb::AddModelRequest {
                alias,
                provider,
                upstream_model: upstream_model.unwrap_or_default(),
                fallbacks,
                input_price_per_mtok: input_price.unwrap_or(0.0),
                output_price_per_mtok: output_price.unwrap_or(0.0),
                weight: 0,
            };
            let info = session.call(client.add_model(request)).await?;
            out.table(&model_rows(std::slice::from_ref(&info)), &model_json(&info))?;
        }
        ModelCommand::List => {
            let response =
                list_all!(session, list_models, pb::ListModelsRequest::default()).await?;
            let json = response.models.iter().map(model_json).collect();
            out.table(&model_rows(&response.models), &Value::Array(json))?;
        }
        ModelCommand::Remove { alias } => {
            let request = pb::RemoveModelRequest {
                alias: alias.clone(),
            };
            session.call(client.remove_model(request)).await?;
            let json = json!({ "alias": alias, "removed": true });
            out.done(&format!("model {alias:?} removed"), &json)?;
        }
        ModelCommand::Deployment(DeploymentCommand::Add {
            alias,
            provider,
            upstream_model,
            weight,
        }) => {
            let request = pb::AddDeploymentRequest {
                alias: alias.clone(),
                provider: provider.clone(),
                upstream_model: upstream_model.unwrap_or_default(),
                weight,
            };
            session.call(client.add_deployment(request)).await?;
            let json = json!({ "alias": alias, "provider": provider, "weight": weight });
            out.done(
                &format!("model {alias:?}: deployment on {provider:?} with weight {weight}"),
                &json,
            )?;
        }
        ModelCommand::Deployment(DeploymentCommand::Remove {
            alias,
            provider,
            upstream_model,
        }) => {
            let request = pb::RemoveDeploymentRequest {
                alias: alias.clone(),
                provider: provider.clone(),
                upstream_model: upstream_model.unwrap_or_default(),
            };
            session.call(client.remove_deployment(request)).await?;
            let json = json!({ "alias": alias, "provider": provider, "removed": true });
            out.done(
                &format!("model {alias:?}: deployment on {provider:?} removed"),
                &json,
            )?;
        }
    }
    Ok(())
}

fn model_rows(models: &[pb::ModelInfo]) -> Rows {
    let mut rows = Rows::new(&[
        "ALIAS",
        "PROVIDER",
        "UPSTREAM MODEL",
        "SOURCE",
        "FALLBACKS",
        "PRICE",
    ]);
    for m in models {
        rows.push(vec![
            m.alias.clone(),
            m.provider.clone(),
            m.upstream_model.clone(),
            m.source.clone(),
            output::list(&m.fallbacks, "-"),
            prices(m.input_price_per_mtok, m.output_price_per_mtok),
        ]);
    }
    rows
}

/// `$2.50/$10.00 per Mtok` (input/output), or `-` when neither price is set.
fn prices(input: f64, output: f64) -> String {
    if input == 0.0 && output == 0.0 {
        "-".to_owned()
    } else {
        format!("{}/{} per Mtok", output::usd(input), output::usd(output))
    }
}

fn model_json(m: &pb::ModelInfo) -> Value {
    json!({
        "alias": m.alias, "provider": m.provider, "upstream_model": m.upstream_model,
        "source": m.source, "fallbacks": m.fallbacks,
        "input_price_per_mtok": m.input_price_per_mtok,
        "output_price_per_mtok": m.output_price_per_mtok,
        "weight": m.weight,
        "deployments": m.deployments.iter().map(|d| json!({
            "provider": d.provider, "upstream_model": d.upstream_model, "weight": d.weight,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::probe;

    fn parse(args: &[&str]) -> Result<ModelCommand, clap::Error> {
        probe::subcommand(args)
    }

    #[test]
    fn parses_and_shows_model_prices_and_fallbacks() {
        let argv = [
            "add",
            "gpt",
            "--provider",
            "p",
            "--fallback",
            "a, b",
            "--input-price",
            "2.50",
            "--output-price",
            "10",
        ];
        match parse(&argv).unwrap() {
            ModelCommand::Add {
                fallbacks,
                input_price,
                output_price,
                ..
            } => {
                assert_eq!(fallbacks, ["a", "b"]);
                assert_eq!(input_price, Some(2.5));
                assert_eq!(output_price, Some(10.0));
            }
            other => panic!("parsed as {other:?}"),
        }
        let bad = ["add", "m", "--provider", "p", "--input-price", "-1"];
        assert!(parse(&bad).is_err());
        assert_eq!(prices(2.5, 10.0), "$2.50/$10.00 per Mtok");
        assert_eq!(prices(0.075, 0.3), "$0.075/$0.30 per Mtok");
        assert_eq!(prices(0.0, 0.0), "-");
        let model = pb::ModelInfo {
            alias: "gpt".into(),
            fallbacks: vec!["a".into(), "b".into()],
            input_price_per_mtok: 2.5,
            ..pb::ModelInfo::default()
        };
        let json = model_json(&model);
        assert_eq!(json["fallbacks"], json!(["a", "b"]));
        assert_eq!(json["input_price_per_mtok"], 2.5);
        assert_eq!(json["output_price_per_mtok"], 0.0);
        let text = model_rows(&[model]).render();
        assert!(text.contains("FALLBACKS  PRICE"), "{text}");
        assert!(text.contains("a,b        $2.50/$0.00 per Mtok"), "{text}");
    }
}
