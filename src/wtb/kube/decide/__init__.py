"""The BatchTest reconcile step's decisions: pure functions over what the step observed (the
object's status, the Workflow check, the RayCluster, the Ray job, the stored run's progress,
the clock), each giving a small frozen verdict that the operator performs. As in KubeRay's
RayJob controller (`checkBackoffLimitAndUpdateStatusIfNeeded` and its kin): one guard per
question, tested without a cluster.

A step runs in stages (`stage_of`): a new generation starts over (`new_generation`); a
finished run waits only for its TTL (`decide_ttl`); an unrecorded one is validated
(`decide_validation`) and recorded (`run_to_record`); a recorded one gets its RayCluster
(`decide_cluster`), then its Ray job (`submission_of`, `decide_job`, `decide_finish`,
`decide_failed_job`), until its deadline (`decide_deadline`). How each verdict changes the
status is `wtb.kube.transitions`'s.

One private module per part of the step (`_stages`, `_cluster`, `_job`, `_deadline`);
import from here.
"""

from wtb.kube.decide._cluster import (
    ClusterReady,
    ClusterVerdict,
    CreateCluster,
    ReplaceCluster,
    cluster_name_for,
    cluster_refused,
    decide_cluster,
)
from wtb.kube.decide._deadline import DeadlineExceeded, decide_deadline
from wtb.kube.decide._job import (
    Finish,
    JobFailed,
    JobVerdict,
    MarkRunning,
    Resubmit,
    Submission,
    Submit,
    Succeed,
    decide_failed_job,
    decide_finish,
    decide_job,
    decide_outcome,
    driver_entrypoint,
    found_submitted,
    job_metadata,
    submission_of,
)
from wtb.kube.decide._stages import (
    TERMINAL,
    DeleteForTtl,
    NewGeneration,
    RecordRun,
    Stage,
    StopJob,
    Validated,
    decide_ttl,
    decide_validation,
    job_to_stop,
    needs_reconcile,
    new_generation,
    run_to_record,
    stage_of,
    ttl_pending,
)

__all__ = [
    "TERMINAL",
    "ClusterReady",
    "ClusterVerdict",
    "CreateCluster",
    "DeadlineExceeded",
    "DeleteForTtl",
    "Finish",
    "JobFailed",
    "JobVerdict",
    "MarkRunning",
    "NewGeneration",
    "RecordRun",
    "ReplaceCluster",
    "Resubmit",
    "Stage",
    "StopJob",
    "Submission",
    "Submit",
    "Succeed",
    "Validated",
    "cluster_name_for",
    "cluster_refused",
    "decide_cluster",
    "decide_deadline",
    "decide_failed_job",
    "decide_finish",
    "decide_job",
    "decide_outcome",
    "decide_ttl",
    "decide_validation",
    "driver_entrypoint",
    "found_submitted",
    "job_metadata",
    "job_to_stop",
    "needs_reconcile",
    "new_generation",
    "run_to_record",
    "stage_of",
    "submission_of",
    "ttl_pending",
]
