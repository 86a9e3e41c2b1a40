//! The MLBatchJob reconcile: observe (its Jobs, CronJob, the referenced MLModel, the run's pods)
//! → plan (pure: [`plan`]) → apply (create the run's Job, or apply the CronJob) → status.
//!
//! A one-off MLBatchJob runs once per spec: its Job is named by the spec's hash and never changed
//! after it is created (a Job's pod template is immutable), so a model resolved for a run stays
//! that run's model. A scheduled one keeps its CronJob's template on the model `modelRef` serves
//! now, so each run starts with the version current at that time.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use modelship_crds::batch_job::{BatchRun, MLBatchJobStatus};
use modelship_crds::{FIELD_MANAGER, MLBatchJob, MLModel};
use tracing::{info, warn};

use super::desired::{self, InvalidField};
use super::resolve::{self, ResolvedModel, Unresolved};
use super::run_status::{self, COMPLETE, FAILED, RUNNING};
use super::*;
use crate::error::{Error, KubeContext};
use crate::ownership;
use crate::reconcile::Context;
use crate::status::condition;

/// Condition types of an MLBatchJob.
pub const RUNNING_CONDITION: &str = "Running";
pub const COMPLETE_CONDITION: &str = "Complete";
pub const FAILED_CONDITION: &str = "Failed";
/// How often a running run is looked at besides its Job's own events.
const REQUEUE_RUNNING: Duration = Duration::from_secs(30);

/// What the reconcile saw.
#[derive(Default)]
pub struct Observed {
    /// Jobs labelled with this MLBatchJob that it (or its CronJob) controls.
    pub jobs: Vec<Job>,
    /// The Job named like this spec's run, whoever controls it.
    pub run_job: Option<Job>,
    pub cron_job: Option<CronJob>,
    pub referenced: Option<MLModel>,
}

/// What to write.
#[derive(Debug, PartialEq)]
pub enum Write {
    CreateJob(Box<Job>),
    ApplyCronJob(Box<CronJob>),
    DeleteCronJob(String),
}

/// The plan: writes, and which Job is the last run (to read its pods for the status).
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub writes: Vec<Write>,
    /// The Job of the last run, if there is one.
    pub last_run: Option<String>,
    /// Why no run can start, when none can: (reason, message, whether it is final until the spec changes).
    pub blocked: Option<(&'static str, String, bool)>,
    /// The model the next or current run scores with.
    pub model: Option<ResolvedModel>,
}

/// The pure plan.
pub fn plan(job: &MLBatchJob, seen: &Observed, settings: &crate::desired::Settings) -> Plan {
    let resolved = resolve::resolve(job, seen.referenced.as_ref());
    let blocked = |e: &Unresolved| {
        let permanent = matches!(e, Unresolved::Unsupported { .. } | Unresolved::Invalid { .. });
        Some((e.reason(), e.to_string(), permanent))
    };
    let invalid = |e: InvalidField| Some(("InvalidSpec", e.to_string(), true));
    let image_check = |image: &str| {
        (!settings.image_allowed(image)).then(|| {
            ("ImageNotAllowed", format!("spec.image: {image:?} is not allowed by this operator's image policy"), true)
        })
    };
    let latest =
        seen.jobs.iter().max_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0)).map(|j| j.name_any());
    let mut out = Plan { writes: vec![], last_run: latest, blocked: None, model: resolved.clone().ok() };

    if job.spec.schedule.is_none() {
        if let Some(cron) = seen.cron_job.as_ref().filter(|c| ownership::is_controlled_by(&c.metadata, job)) {
            out.writes.push(Write::DeleteCronJob(cron.name_any()));
        }
        let name = desired::run_name(job);
        match &seen.run_job {
            Some(existing) if ownership::is_controlled_by(&existing.metadata, job) => {
                // This spec's run exists: never changed, whatever the MLModel serves now.
                out.last_run = Some(name);
                out.model = None;
            }
            Some(existing) => {
                out.blocked = Some((
                    "NameConflict",
                    format!(
                        "Job {name:?} already exists and is controlled by {}, not by this MLBatchJob: it is left untouched",
                        ownership::controller_of(&existing.metadata)
                    ),
                    true,
                ));
            }
            None => match &resolved {
                Err(e) => out.blocked = blocked(e),
                Ok(model) => match desired::run_job(job, model, settings) {
                    Err(e) => out.blocked = invalid(e),
                    Ok(j) => match image_check(&desired::image(job, settings)) {
                        Some(b) => out.blocked = Some(b),
                        None => {
                            out.last_run = Some(name);
                            out.writes.push(Write::CreateJob(Box::new(j)));
                        }
                    },
                },
            },
        }
        return out;
    }

    if let Some(cron) = seen.cron_job.as_ref().filter(|c| !ownership::is_controlled_by(&c.metadata, job)) {
        out.blocked = Some((
            "NameConflict",
            format!(
                "CronJob {:?} already exists and is controlled by {}, not by this MLBatchJob: it is left untouched",
                cron.name_any(),
                ownership::controller_of(&cron.metadata)
            ),
            true,
        ));
        return out;
    }
    // Keep the CronJob on the current model; while the model cannot be resolved, the CronJob
    // keeps the last one it had.
    match &resolved {
        Err(e) => out.blocked = blocked(e),
        Ok(model) => match desired::cron_job(job, model, settings) {
            Err(e) => out.blocked = invalid(e),
            Ok(None) => {}
            Ok(Some(cron)) => match image_check(&desired::image(job, settings)) {
                Some(b) => out.blocked = Some(b),
                None => out.writes.push(Write::ApplyCronJob(Box::new(cron))),
            },
        },
    }
    out
}

/// The model a run's Job records.
fn recorded_model(job: &Job) -> modelship_crds::batch_job::ResolvedBatchModel {
    let a = job.annotations();
    modelship_crds::batch_job::ResolvedBatchModel {
        uri: a.get(MODEL_URI_ANNOTATION).cloned().unwrap_or_default(),
        version: a.get(MODEL_VERSION_ANNOTATION).cloned(),
        sha256: a.get(MODEL_SHA256_ANNOTATION).cloned(),
        from: a.get(MODEL_FROM_ANNOTATION).cloned(),
    }
}

/// A run's result, the conditions' reason and their message.
fn run_summary(run: &BatchRun) -> (&str, &'static str, String) {
    let total = run.shards.split('/').nth(1).unwrap_or("?");
    match run.result.as_str() {
        COMPLETE => (
            COMPLETE,
            "AllShardsSucceeded",
            format!("{} rows scored by {total} shards; {}", run.rows, run.output_manifest.clone().unwrap_or_default()),
        ),
        FAILED => (
            FAILED,
            "ShardsFailed",
            match run.failed_shards.first() {
                Some(f) => format!("{} of {total} shards failed; shard {}: {}", run.shards_failed, f.index, f.reason),
                None => "the run failed".into(),
            },
        ),
        _ => (RUNNING, "ShardsRunning", format!("{} shards done, {} rows so far", run.shards, run.rows)),
    }
}

/// The status: the last run's counts and the three conditions.
pub fn status(job: &MLBatchJob, plan: &Plan, last: Option<(&Job, BatchRun)>, now: &Time) -> MLBatchJobStatus {
    let generation = job.metadata.generation;
    let (result, reason, message): (&str, &str, String) = match (&plan.blocked, &last) {
        (Some((reason, message, true)), _) => (FAILED, reason, message.clone()),
        (_, Some((_, run))) => run_summary(run),
        (Some((reason, message, false)), None) => ("Waiting", reason, message.clone()),
        (None, None) if job.spec.schedule.is_some() => (
            "Scheduled",
            "Scheduled",
            format!("waiting for the first run of {:?}", job.spec.schedule.as_deref().unwrap_or_default()),
        ),
        (None, None) => ("Waiting", "Starting", "creating the run's Job".into()),
    };
    let conditions = vec![
        condition(RUNNING_CONDITION, result == RUNNING, reason, message.clone(), generation, now),
        condition(COMPLETE_CONDITION, result == COMPLETE, reason, message.clone(), generation, now),
        condition(FAILED_CONDITION, result == FAILED, reason, message, generation, now),
    ];
    let model = match &last {
        Some((j, _)) => Some(recorded_model(j)),
        None => plan.model.as_ref().map(ResolvedModel::status),
    };
    MLBatchJobStatus {
        observed_generation: generation,
        conditions,
        model,
        last_run: last.map(|(_, run)| run),
        cron_job: job.spec.schedule.as_ref().map(|_| job.name_any()),
        next_run_time: next_run(job, now).map(Time),
    }
}

/// When a scheduled, unsuspended MLBatchJob's schedule fires next (`None` for a one-off job, or
/// a schedule or time zone the plan refuses).
fn next_run(job: &MLBatchJob, now: &Time) -> Option<jiff::Timestamp> {
    if job.spec.suspend == Some(true) {
        return None;
    }
    let schedule: schedule::Schedule = job.spec.schedule.as_deref()?.parse().ok()?;
    schedule.next_after(now.0, &schedule::time_zone(job.spec.time_zone.as_deref()).ok()?)
}

/// Keeps each condition's `lastTransitionTime` when its status did not change.
fn keep_transition_times(old: Option<&MLBatchJobStatus>, new: &mut MLBatchJobStatus) {
    let Some(old) = old else { return };
    for c in &mut new.conditions {
        if let Some(prev) = old.conditions.iter().find(|p| p.type_ == c.type_ && p.status == c.status) {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

async fn observe(ctx: &Context, job: &MLBatchJob, ns: &str) -> Result<Observed, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let crons: Api<CronJob> = Api::namespaced(ctx.client.clone(), ns);
    let name = job.name_any();
    let cron_job = crons.get_opt(&name).await.during("get CronJob")?;
    let ours_cron = cron_job.as_ref().filter(|c| ownership::is_controlled_by(&c.metadata, job));
    let listed =
        jobs.list(&ListParams::default().labels(&format!("{BATCH_JOB_LABEL}={name}"))).await.during("list Jobs")?;
    let owned = listed
        .items
        .into_iter()
        .filter(|j| {
            ownership::is_controlled_by(&j.metadata, job)
                || ours_cron.is_some_and(|c| ownership::is_controlled_by(&j.metadata, c))
        })
        .collect();
    let run_job =
        if job.spec.schedule.is_none() { jobs.get_opt(&desired::run_name(job)).await.during("get Job")? } else { None };
    let referenced = match &job.spec.model_ref {
        Some(r) => Api::<MLModel>::namespaced(ctx.client.clone(), ns).get_opt(&r.name).await.during("get MLModel")?,
        None => None,
    };
    Ok(Observed { jobs: owned, run_job, cron_job, referenced })
}

async fn apply(ctx: &Context, ns: &str, writes: &[Write]) -> Result<(), Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let crons: Api<CronJob> = Api::namespaced(ctx.client.clone(), ns);
    for w in writes {
        match w {
            Write::CreateJob(j) => match jobs
                .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, j)
                .await
            {
                Ok(_) => info!(job = %j.name_any(), namespace = %ns, "created the run's Job"),
                // Created a moment ago (a stale read): the next pass sees it.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e).during("create Job"),
            },
            Write::ApplyCronJob(c) => {
                let mut body =
                    serde_json::to_value(&**c).map_err(|source| Error::Serialize { what: "CronJob", source })?;
                body["apiVersion"] = "batch/v1".into();
                body["kind"] = "CronJob".into();
                crons
                    .patch(&c.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
                    .await
                    .during("apply CronJob")?;
            }
            Write::DeleteCronJob(name) => {
                crons.delete(name, &Default::default()).await.during("delete CronJob")?;
            }
        }
    }
    Ok(())
}

async fn publish(ctx: &Context, job: &MLBatchJob, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Run".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &job.object_ref(&())).await {
        warn!(batch_job = %job.name_any(), error = %e, "cannot record event");
    }
}

/// Events when a run starts, completes or fails (compared with the stored status).
async fn announce(ctx: &Context, job: &MLBatchJob, new: &MLBatchJobStatus) {
    let old = job.status.as_ref().and_then(|s| s.last_run.as_ref());
    let Some(run) = &new.last_run else { return };
    let same_run = old.is_some_and(|o| o.job == run.job);
    if !same_run {
        publish(ctx, job, EventType::Normal, "Started", format!("run {} started: {} shards", run.job, run.shards))
            .await;
    }
    if same_run && old.is_some_and(|o| o.result == run.result) {
        return;
    }
    match run.result.as_str() {
        COMPLETE => {
            publish(
                ctx,
                job,
                EventType::Normal,
                "Completed",
                format!("run {}: {} rows, {}", run.job, run.rows, run.output_manifest.clone().unwrap_or_default()),
            )
            .await
        }
        FAILED => {
            let why = run.failed_shards.first().map(|f| format!("shard {}: {}", f.index, f.reason)).unwrap_or_default();
            publish(ctx, job, EventType::Warning, "Failed", format!("run {} failed: {why}", run.job)).await
        }
        _ => {}
    }
}

pub async fn reconcile(job: Arc<MLBatchJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = job.namespace().ok_or(Error::MissingNamespace)?;
    let seen = observe(&ctx, &job, &ns).await?;
    let plan = plan(&job, &seen, &ctx.settings);
    let creating = plan.writes.iter().find_map(|w| match w {
        Write::CreateJob(j) => Some((**j).clone()),
        _ => None,
    });
    apply(&ctx, &ns, &plan.writes).await?;

    let last_job = match &plan.last_run {
        Some(name) => match seen.jobs.iter().chain(seen.run_job.iter()).find(|j| j.name_any() == *name) {
            Some(j) => Some(j.clone()),
            None => creating,
        },
        None => None,
    };
    let last = match last_job {
        Some(j) => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let listed = pods
                .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={}", j.name_any())))
                .await
                .during("list Pods")?;
            let run = run_status::run(&j, &listed.items);
            Some((j, run))
        }
        None => None,
    };
    let mut new = status(&job, &plan, last.as_ref().map(|(j, r)| (j, r.clone())), &Time(jiff::Timestamp::now()));
    keep_transition_times(job.status.as_ref(), &mut new);
    if job.status.as_ref() != Some(&new) {
        announce(&ctx, &job, &new).await;
        let api: Api<MLBatchJob> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({ "apiVersion": MLBatchJob::api_version(&()), "kind": MLBatchJob::kind(&()), "status": new });
        api.patch_status(&job.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch))
            .await
            .during("patch MLBatchJob status")?;
    }
    let running = new.last_run.as_ref().is_some_and(|r| r.result == RUNNING)
        || (plan.blocked.is_none() && new.last_run.is_none() && job.spec.schedule.is_none());
    // A scheduled job looks again just after its next tick (the new Job wakes it sooner), so
    // nextRunTime moves on even when the CronJob skips a run.
    let after_tick = new.next_run_time.as_ref().map(|next| {
        let wait = next.0.duration_since(jiff::Timestamp::now()).as_secs().max(0) as u64 + 5;
        Duration::from_secs(wait.clamp(10, 3600))
    });
    Ok(match (running, after_tick) {
        (true, _) => Action::requeue(REQUEUE_RUNNING),
        (false, Some(wait)) => Action::requeue(wait),
        (false, None) => Action::await_change(),
    })
}

pub fn error_policy(job: Arc<MLBatchJob>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(batch_job = %job.name_any(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Settings;

    fn scheduled(extra: serde_json::Value) -> MLBatchJob {
        let mut spec = serde_json::json!({"schedule": "0 3 * * *"});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        crate::batch::desired::tests::batch(spec)
    }

    fn status_of(job: &MLBatchJob, now: &str) -> (Plan, MLBatchJobStatus) {
        let plan = plan(job, &Observed::default(), &Settings::new("server:1"));
        let status = status(job, &plan, None, &Time(now.parse().unwrap()));
        (plan, status)
    }

    #[test]
    fn a_schedule_says_when_it_runs_next_in_its_time_zone_unless_suspended() {
        let now = "2026-12-06T17:45:00Z";
        let (plan, s) = status_of(&scheduled(serde_json::json!({})), now);
        assert!(matches!(plan.writes[..], [Write::ApplyCronJob(_)]), "{:?}", plan.writes);
        assert_eq!(s.next_run_time.map(|t| t.0.to_string()).as_deref(), Some("2026-12-07T03:00:00Z"));
        assert_eq!(s.cron_job.as_deref(), Some("nightly"));
        let (plan, s) = status_of(&scheduled(serde_json::json!({"timeZone": "America/New_York"})), now);
        let Write::ApplyCronJob(cron) = &plan.writes[0] else { panic!("{:?}", plan.writes) };
        assert_eq!(cron.spec.as_ref().unwrap().time_zone.as_deref(), Some("America/New_York"));
        assert_eq!(s.next_run_time.map(|t| t.0.to_string()).as_deref(), Some("2026-12-07T08:00:00Z"));
        let (plan, s) = status_of(&scheduled(serde_json::json!({"suspend": true})), now);
        let Write::ApplyCronJob(cron) = &plan.writes[0] else { panic!("{:?}", plan.writes) };
        assert_eq!(cron.spec.as_ref().unwrap().suspend, Some(true));
        assert_eq!(s.next_run_time, None);
        let (_, s) = status_of(&scheduled(serde_json::json!({"schedule": null})), now);
        assert_eq!((s.next_run_time, s.cron_job), (None, None));
    }

    #[test]
    fn a_schedule_or_time_zone_the_cron_job_api_would_refuse_fails_the_job_naming_the_field() {
        for (extra, want) in [
            (serde_json::json!({"schedule": "0 25 * * *"}), "spec.schedule: hour: 25 is outside 0-23"),
            (serde_json::json!({"timeZone": "Mars/Olympus"}), "spec.timeZone: unknown time zone \"Mars/Olympus\""),
        ] {
            let (plan, s) = status_of(&scheduled(extra), "2026-12-06T17:45:00Z");
            assert!(plan.writes.is_empty(), "{:?}", plan.writes);
            let failed = s.conditions.iter().find(|c| c.type_ == FAILED_CONDITION).unwrap();
            assert_eq!((failed.status.as_str(), failed.reason.as_str()), ("True", "InvalidSpec"));
            assert!(failed.message.contains(want), "{}", failed.message);
            assert_eq!(s.next_run_time, None);
        }
    }
}
