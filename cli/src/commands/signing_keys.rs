//! `wardenctl signing-key rotate|list`: the keys JWTs are signed with.

use clap::Subcommand;
use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;

use crate::output::{self, Printer, Rows};
use crate::paging::list_all;
use crate::session::Session;

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Make a new key the signer; old keys stay on the nodes until the last token each
    /// signed has expired.
    Rotate,
    /// List signing keys: which one signs, and until when the others are needed.
    #[command(visible_alias = "ls")]
    List,
}

/// Runs one `signing-key` subcommand.
pub async fn run(
    session: &Session,
    out: Printer,
    command: SigningKeyCommand,
) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    let keys = match command {
        SigningKeyCommand::Rotate => {
            vec![
                session
                    .call(client.rotate_signing_key(pb::RotateSigningKeyRequest {}))
                    .await?,
            ]
        }
        SigningKeyCommand::List => {
            list_all!(
                session,
                list_signing_keys,
                pb::ListSigningKeysRequest::default()
            )
            .await?
            .keys
        }
    };
    let mut rows = Rows::new(&["KID", "ALGORITHM", "CREATED", "ACTIVE", "NEEDED UNTIL"]);
    let mut json = Vec::new();
    for k in &keys {
        rows.push(vec![
            k.kid.clone(),
            k.algorithm.clone(),
            output::timestamp(k.created_at),
            if k.active { "yes" } else { "no" }.to_owned(),
            if k.needed_until > 0 {
                output::timestamp(k.needed_until)
            } else {
                "-".to_owned()
            },
        ]);
        json.push(json!({
            "kid": k.kid, "algorithm": k.algorithm, "created_at": k.created_at,
            "active": k.active, "needed_until": k.needed_until,
        }));
    }
    out.table(&rows, &Value::Array(json))?;
    Ok(())
}
