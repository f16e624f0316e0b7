//! The top of the CLI: the parsed command line mapped to the command families in `commands`.
//! Nothing imports this module but `main`.

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, Command, KeyCommand, OperatorCommand};
use crate::commands::{
    audit, backup, backup_cluster, ceremony, cluster, import, init, keys, operator, serve, tokens,
    usage, witness,
};
use crate::output::Out;

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let out = Out {
        json: cli.json,
        client: cli.client.clone(),
    };
    match &cli.command {
        Command::Init(args) => init::init(args, &out),
        Command::Serve(args) => serve::serve(args),
        Command::Status => operator::status(&out.client, &out),
        Command::Unseal(args) => operator::unseal(args, &out),
        Command::Seal { cluster } => operator::seal(&out.client, *cluster, &out),
        Command::Key(c) => key_command(c, &out),
        Command::Token(c) => tokens::run(c, &out),
        Command::Audit(c) => audit::run(c, &out),
        Command::Signals { owner, since } => {
            usage::signals(&out.client, owner.as_deref(), since.as_deref(), &out)
        }
        Command::Operator(c) => operator_command(c, &out),
        Command::Witness(c) => witness::run(c, &out),
        Command::Cluster(c) => cluster::run(c, &out),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "keyvault",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `keyvault key ...`: the key family, but a key's usage is the usage family's.
fn key_command(command: &KeyCommand, out: &Out) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Create(args) => keys::create(args, out),
        KeyCommand::List {
            owner,
            name,
            status,
            limit,
            cursor,
        } => keys::list(
            owner.as_deref(),
            name.as_deref(),
            *status,
            *limit,
            cursor.as_deref(),
            out,
        ),
        KeyCommand::Import { file } => import::import(file, out),
        KeyCommand::Show { id } => keys::show(id, out),
        KeyCommand::Update(args) => keys::update(args, out),
        KeyCommand::Rotate { id, grace } => keys::rotate(id, *grace, out),
        KeyCommand::Revoke { id, owner } => keys::revoke(id.as_deref(), owner.as_deref(), out),
        KeyCommand::Reveal { id } => keys::reveal(id, out),
        KeyCommand::Verify { key, scope, cost } => keys::verify(key, scope.as_deref(), *cost, out),
        KeyCommand::Usage { id, days } => usage::key_usage(&out.client, id, *days, out),
    }
}

/// `keyvault operator ...`: keyring and audit-key rotation, ceremonies, backups and the usage
/// rebuild, each in its family.
fn operator_command(command: &OperatorCommand, out: &Out) -> anyhow::Result<ExitCode> {
    match command {
        OperatorCommand::Rotate => operator::rotate(out),
        OperatorCommand::Rewrap => operator::rewrap(out),
        OperatorCommand::RotateAuditKey => operator::rotate_audit_key(out),
        OperatorCommand::Rekey(args) => {
            ceremony::rekey(args, out)?;
            Ok(ExitCode::SUCCESS)
        }
        OperatorCommand::GenerateRoot(args) => {
            ceremony::generate_root(args, out)?;
            Ok(ExitCode::SUCCESS)
        }
        OperatorCommand::Backup(args) if args.cluster => backup_cluster::backup(args, out),
        OperatorCommand::Backup(args) => backup::backup(args, out),
        OperatorCommand::Restore(args) => backup::restore(args, out),
        OperatorCommand::UsageRebuild { data_dir, config } => {
            usage::rebuild(data_dir, config.as_deref(), out)
        }
    }
}
