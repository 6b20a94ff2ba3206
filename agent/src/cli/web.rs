//! CLI verbs about people: `justify` (the requester says why), `login`/`logout`
//! (link this account to an identity-provider identity) and `web-login` (a one-time
//! web console link).

use super::client::Client;
use serde_json::Value;

fn message(done: &Value) -> &str {
    done.get("message")
        .and_then(Value::as_str)
        .unwrap_or("done")
}

/// `portcullis justify ID "…"`.
pub async fn justify(client: &Client, id: &str, text: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "justification": text });
    let done = client
        .post(&format!("/v1/approvals/{id}/justify"), Some(&body))
        .await?;
    println!("{}", message(&done));
    Ok(())
}

/// `portcullis logout`.
pub async fn logout(client: &Client) -> anyhow::Result<()> {
    let done = client.post("/v1/logout", None).await?;
    println!("{}", message(&done));
    Ok(())
}

/// `portcullis web-login`: prints the one-time sign-in URL.
pub async fn web_login(client: &Client) -> anyhow::Result<()> {
    let done = client.post("/v1/web/link", None).await?;
    println!(
        "{}",
        done.get("url").and_then(Value::as_str).unwrap_or_default()
    );
    Ok(())
}

/// `portcullis login`: prints where to sign in, then the linked identity.
pub async fn login(client: &Client) -> anyhow::Result<()> {
    let mut failed = None;
    client
        .stream("/v1/login", |line| {
            let v: Value = serde_json::from_str(line).unwrap_or_default();
            let text = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            if v.get("user_code").is_some() {
                let open = v
                    .get("verification_uri_complete")
                    .and_then(Value::as_str)
                    .map_or_else(|| text("verification_uri"), str::to_owned);
                println!("Open {open}\nand confirm the code {}", text("user_code"));
            } else if v.get("linked").and_then(Value::as_bool) == Some(true) {
                println!("Linked to {}", text("identity"));
            } else {
                failed = Some(text("error"));
            }
        })
        .await?;
    match failed {
        Some(e) => anyhow::bail!("not linked: {e}"),
        None => Ok(()),
    }
}
