//! `operator rekey` and `operator generate-root`: ceremonies where each holder of the unseal
//! credential gives their own share, in their own process, under the nonce the initiator got.
//!
//! Human output goes to stdout (what to hand on: the nonce, the digest, the result); the
//! holder's view of the ceremony before giving a share goes to stderr, so that `--json` keeps
//! stdout to one JSON answer.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::cli::{CeremonyArgs, ClientArgs, GenerateRootArgs, RekeyArgs};
use crate::client::{Addr, Client, client};
use crate::output::Out;
use crate::secret_input::{prompt_secret, read_secret_file};

const REKEY: &str = "/v1/sys/rekey";
const GENERATE_ROOT: &str = "/v1/sys/generate-root";

/// How often a waiting initiator asks how the ceremony stands.
const POLL: Duration = Duration::from_secs(2);

/// `keyvault operator rekey`.
pub fn rekey(args: &RekeyArgs, out: &Out) -> anyhow::Result<()> {
    let client = client(&out.client)?;
    let new = match (
        &args.new_passphrase_file,
        args.new_shares,
        args.new_threshold,
    ) {
        (Some(file), None, None) => Some(json!({ "passphrase": read_secret_file(file)?.as_str() })),
        (None, Some(n), Some(t)) => Some(json!({ "shares": n, "threshold": t })),
        (None, None, None) => None,
        _ => bail!(
            "give either --new-passphrase-file FILE, or --new-shares N with --new-threshold T"
        ),
    };
    let Some(new) = new else {
        let Some(nonce) = &args.ceremony.nonce else {
            bail!(
                "start a rekey with --new-shares N --new-threshold T or --new-passphrase-file FILE, \
                 or join one with --nonce NONCE"
            );
        };
        let answer = join(&client, REKEY, nonce, &args.ceremony)?;
        print_answer(&answer, out, None)?;
        return Ok(());
    };
    let mut start = json!({ "new": new });
    if !args.new_share_recipients.is_empty() {
        start["new_share_recipients"] = json!(args.new_share_recipients);
    }
    let started = client.call("POST", REKEY, Some(&start))?;
    let answer = after_start(&client, REKEY, started, &args.ceremony, out, "rekey")?;
    print_answer(&answer, out, None)
}

/// `keyvault operator generate-root`. It sends no token, even if one is set.
pub fn generate_root(args: &GenerateRootArgs, out: &Out) -> anyhow::Result<()> {
    if let Some(file) = &args.decrypt {
        // Invariant: clap requires --identity-file with --decrypt.
        let identity = read_identity(args.identity_file.as_deref().context("--identity-file")?)?;
        let armored = read_armored(file)?;
        let token = decrypt(&identity, &armored)?;
        let value = json!({ "token": token.expose_secret() });
        out.value(&value, || {
            format!(
                "new admin token (shown only now): {}",
                token.expose_secret()
            )
        });
        return Ok(());
    }
    let client = anonymous_client(&out.client)?;
    if let Some(nonce) = &args.ceremony.nonce {
        let identity = args
            .identity_file
            .as_deref()
            .map(read_identity)
            .transpose()?;
        let answer = join(&client, GENERATE_ROOT, nonce, &args.ceremony)?;
        return print_answer(&answer, out, identity.as_ref());
    }
    let identity = age::x25519::Identity::generate();
    if let Some(path) = &args.identity_file {
        write_identity(path, &identity)?;
    }
    let recipient = identity.to_public().to_string();
    let started = client.call(
        "POST",
        GENERATE_ROOT,
        Some(&json!({ "recipient": recipient })),
    )?;
    let mut answer = after_start(
        &client,
        GENERATE_ROOT,
        started,
        &args.ceremony,
        out,
        "generate-root",
    )?;
    if answer["state"] == "open" && args.identity_file.is_none() {
        // The one-time key lives only in this process: wait for the holders.
        answer = wait(&client, GENERATE_ROOT, &answer)?;
    }
    print_answer(&answer, out, Some(&identity))
}

/// A client that sends no token (generate-root's authority is the unseal credential).
fn anonymous_client(args: &ClientArgs) -> anyhow::Result<Client> {
    Client::new(Addr::parse(&args.addr)?, None, args.ca_cert.as_deref())
}

/// After a start: shows the nonce and digest to hand on, then gives the initiator's own
/// credential if one was given. Returns the latest answer.
fn after_start(
    client: &Client,
    path: &str,
    started: Value,
    args: &CeremonyArgs,
    out: &Out,
    command: &str,
) -> anyhow::Result<Value> {
    let nonce = started["nonce"]
        .as_str()
        .context("the vault answered without a ceremony nonce")?
        .to_owned();
    if !out.json || args.share.is_some() || args.passphrase_file.is_some() {
        println!(
            "{} ceremony started; it expires in ten minutes.\n\
             nonce:  {nonce}\n\
             digest: {}\n\
             {}\
             Each holder runs: keyvault operator {command} --nonce {nonce}\n\
             and compares the digest with yours before giving their share.",
            command,
            started["digest"].as_str().unwrap_or("?"),
            indent(started["description"].as_str().unwrap_or("")),
        );
    }
    if args.share.is_none() && args.passphrase_file.is_none() {
        return Ok(started);
    }
    let given = submit(client, path, &nonce, &started, args)?;
    Ok(given)
}

/// A holder's run under `--nonce`: status, cancel, or their own credential.
fn join(client: &Client, path: &str, nonce: &str, args: &CeremonyArgs) -> anyhow::Result<Value> {
    if args.cancel {
        return client.call(
            "POST",
            path,
            Some(&json!({ "nonce": nonce, "cancel": true })),
        );
    }
    let current = client.call("POST", path, Some(&json!({ "nonce": nonce })))?;
    if args.status || current["state"] != "open" {
        return Ok(current);
    }
    // On stderr, JSON or not: the holder must see what they approve.
    eprintln!(
        "{} of {} shares given so far.\nThe ceremony makes:\n{}digest: {}\n\
         Compare this digest with the initiator's before you give your share (Ctrl-C to stop).",
        current["progress"],
        current["threshold"],
        indent(current["description"].as_str().unwrap_or("")),
        current["digest"].as_str().unwrap_or("?"),
    );
    submit(client, path, nonce, &current, args)
}

/// Gives this holder's credential, with the digest they were shown (or the one they gave), so
/// that it is given to that configuration only.
fn submit(
    client: &Client,
    path: &str,
    nonce: &str,
    current: &Value,
    args: &CeremonyArgs,
) -> anyhow::Result<Value> {
    let digest = match &args.digest {
        Some(d) => d.trim().to_owned(),
        None => current["digest"].as_str().unwrap_or_default().to_owned(),
    };
    let mut body = json!({ "nonce": nonce, "digest": digest });
    let secret = if let Some(file) = &args.passphrase_file {
        (
            "passphrase",
            SecretString::from(read_secret_file(file)?.as_str()),
        )
    } else {
        let share = match args.share.as_deref() {
            Some("-") | None => prompt_secret("Your current unseal share")?,
            Some(literal) => {
                eprintln!(
                    "warning: a share on the command line is visible in `ps` and shell history; pass `-` to be prompted"
                );
                SecretString::from(literal)
            }
        };
        ("share", share)
    };
    body[secret.0] = json!(secret.1.expose_secret());
    let answer = client.call("POST", path, Some(&body));
    // Wipe the copy of the secret in the request body.
    if let Some(Value::String(s)) = body.get_mut(secret.0) {
        zeroize::Zeroize::zeroize(s);
    }
    answer
}

/// Polls the ceremony until it completes (or ends: its error is returned).
fn wait(client: &Client, path: &str, current: &Value) -> anyhow::Result<Value> {
    let nonce = current["nonce"].as_str().unwrap_or_default().to_owned();
    let spinner = crate::output::spinner("waiting for the holders' shares");
    let mut progress = current["progress"].clone();
    loop {
        std::thread::sleep(POLL);
        let answer = client.call("POST", path, Some(&json!({ "nonce": nonce })))?;
        if answer["state"] != "open" {
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            return Ok(answer);
        }
        if answer["progress"] != progress {
            progress = answer["progress"].clone();
            let line = format!("{} of {} shares given", progress, answer["threshold"]);
            match &spinner {
                Some(s) => s.set_message(line),
                None => eprintln!("{line}"),
            }
        }
    }
}

/// Prints a ceremony's answer: its progress, or what it made. With `identity`, an encrypted
/// token is decrypted here and printed.
fn print_answer(
    answer: &Value,
    out: &Out,
    identity: Option<&age::x25519::Identity>,
) -> anyhow::Result<()> {
    if let (Some(identity), Some(armored)) = (identity, answer["encrypted_token"].as_str()) {
        let token = decrypt(identity, armored)?;
        let value = json!({
            "state": answer["state"],
            "token": token.expose_secret(),
            "token_id": answer["token_id"],
        });
        out.value(&value, || {
            format!(
                "new admin token (shown only now): {}\ntoken id: {}",
                token.expose_secret(),
                answer["token_id"].as_str().unwrap_or("?")
            )
        });
        return Ok(());
    }
    out.value(answer, || human(answer));
    Ok(())
}

fn human(answer: &Value) -> String {
    let digest = answer["digest"].as_str().unwrap_or("?");
    match answer["state"].as_str() {
        Some("cancelled") => format!(
            "ceremony {} cancelled",
            answer["nonce"].as_str().unwrap_or("?")
        ),
        Some("open") => format!(
            "{} of {} shares given; digest {digest}",
            answer["progress"], answer["threshold"]
        ),
        _ => {
            let mut s = format!("complete; digest {digest}");
            if let Some(shares) = answer["shares"].as_array() {
                s += "\nrekeyed: the old passphrase or shares no longer unseal this vault\n\
                      new unseal shares (shown only now; give each to a different holder):";
                for (i, share) in shares.iter().enumerate() {
                    s += &format!("\n  share {}: {}", i + 1, share.as_str().unwrap_or("?"));
                }
            } else if let Some(shares) = answer["encrypted_shares"].as_array() {
                s += "\nrekeyed: the old passphrase or shares no longer unseal this vault\n\
                      new unseal shares, each encrypted to its recipient (`age -d -i IDENTITY`):";
                for (i, share) in shares.iter().enumerate() {
                    s += &format!(
                        "\nshare {}:\n{}",
                        i + 1,
                        share.as_str().unwrap_or("?").trim_end()
                    );
                }
            } else if let Some(token) = answer["encrypted_token"].as_str() {
                s += &format!(
                    "\nnew admin token {}, encrypted to the initiator's one-time key; save the \
                     block below to a file and hand it to the initiator, who runs \
                     `keyvault operator generate-root --decrypt FILE --identity-file KEY`:\n{}",
                    answer["token_id"].as_str().unwrap_or("?"),
                    token.trim_end()
                );
            } else {
                s += "\nrekeyed: the old passphrase no longer unseals this vault";
            }
            s
        }
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn write_identity(path: &Path, identity: &age::x25519::Identity) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    let text = identity.to_string();
    file.write_all(text.expose_secret().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn read_identity(path: &Path) -> anyhow::Result<age::x25519::Identity> {
    let text = read_secret_file(path)?;
    text.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "{} does not hold an age X25519 identity (AGE-SECRET-KEY-1...)",
            path.display()
        )
    })
}

fn read_armored(file: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
    } else {
        text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(text.trim().to_owned() + "\n")
}

fn decrypt(identity: &age::x25519::Identity, armored: &str) -> anyhow::Result<SecretString> {
    let plain = Zeroizing::new(age::decrypt(identity, armored.as_bytes()).map_err(|_| {
        anyhow::anyhow!("the encrypted token does not open with this identity (or is damaged)")
    })?);
    let text = std::str::from_utf8(&plain).context("the decrypted token is not text")?;
    Ok(SecretString::from(text))
}
