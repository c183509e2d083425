//! `globaldns write-back withdraw`: gives up every field globaldns's field manager owns in every
//! ServiceEntry of the given clusters, for users who turn spec write-back off. A field no one else
//! owns is removed with it (server-side apply's rule); one a person also applied stays theirs.

use anyhow::{Context as _, Result};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};

use super::ownership::{ours_anywhere, FIELD_MANAGER};
use super::spec::{apply_body, SpecWrite};
use crate::kube::crd;
use crate::kube::source::discover;

/// What one cluster's withdrawal did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Withdrawn {
    /// Objects looked at.
    pub objects: usize,
    /// `namespace/name` of the objects whose globaldns fields were given up.
    pub withdrawn: Vec<String>,
}

/// Withdraws globaldns's fields from every ServiceEntry the cluster serves (`dry_run`: only
/// says which).
pub async fn cluster(client: Client, dry_run: bool) -> Result<Withdrawn> {
    let Some(version) = discover(&client).await? else {
        return Ok(Withdrawn::default());
    };
    let resource = crd::serviceentry_resource(&version);
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let list = all
        .list(&ListParams::default())
        .await
        .context("listing ServiceEntries")?;
    let mut done = Withdrawn {
        objects: list.items.len(),
        ..Default::default()
    };
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.dry_run = dry_run;
    for obj in &list.items {
        let managed = obj.metadata.managed_fields.as_deref().unwrap_or_default();
        if !ours_anywhere(managed) {
            continue;
        }
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let rv = obj.metadata.resource_version.clone().unwrap_or_default();
        let body = apply_body(&resource.api_version, &ns, &name, &rv, &SpecWrite::Withdraw);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
        api.patch(&name, &params, &Patch::Apply(&body))
            .await
            .with_context(|| format!("withdrawing from {ns}/{name}"))?;
        done.withdrawn.push(format!("{ns}/{name}"));
    }
    Ok(done)
}

/// The `write-back withdraw` command: every cluster named, one line per object changed.
pub fn command(args: &crate::config::WithdrawArgs) -> Result<std::process::ExitCode> {
    use crate::kube::clusters::{client_for, ConfigSource};
    let mut sources = Vec::new();
    if args.in_cluster {
        sources.push((args.cluster_name.clone(), ConfigSource::InCluster));
    }
    for c in &args.clusters {
        sources.push((
            c.name.clone(),
            ConfigSource::Kubeconfig {
                path: c.path.clone(),
                context: c.context.clone(),
            },
        ));
    }
    anyhow::ensure!(
        !sources.is_empty(),
        "name a cluster: --in-cluster or --cluster NAME=PATH"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let verb = if args.dry_run {
        "would withdraw"
    } else {
        "withdrew"
    };
    for (name, src) in sources {
        let done = rt.block_on(async {
            let client = client_for(&src).await?;
            cluster(client, args.dry_run).await
        });
        let done = done.with_context(|| format!("cluster {name}"))?;
        for o in &done.withdrawn {
            println!("{name}\t{o}\t{verb} globaldns's fields");
        }
        println!(
            "# {name}: {} ServiceEntries, {} {verb}",
            done.objects,
            done.withdrawn.len()
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
