# Identities and the roles each holds. One service account per function and one per push
# trigger; every grant is scoped to the single resource it is needed on where IAM allows it.
# Role reference: https://cloud.google.com/iam/docs/understanding-roles

locals {
  pubsub_service_agent = "service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  vertex_service_agents = [
    # Vertex AI service agent: reads training data and writes tuning outputs for tuning and
    # pipeline jobs run without a custom service account, and serves deployed models.
    "service-${local.project_number}@gcp-sa-aiplatform.iam.gserviceaccount.com",
    # Vertex AI open-model fine-tuning agent, named by the open-model tuning page (seeds 000/002)
    # as needing Storage Object User on the buckets that hold the dataset and its images.
    "service-${local.project_number}@gcp-sa-vertex-moss-ft.iam.gserviceaccount.com",
  ]
  datastore_condition = "resource.name == \"projects/${var.project_id}/databases/${var.firestore_database}\""
}

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

# ---------------------------------------------------------------------------------------
# Function identities
# ---------------------------------------------------------------------------------------

resource "google_service_account" "function" {
  for_each = local.functions

  account_id   = "droptune-${each.key}"
  display_name = "droptune ${each.key} function"
  description  = "Runtime identity of the droptune ${each.key} Cloud Function."
}

# Storage Object User (roles/storage.objectUser) on the datasets bucket: the validator reads
# the dataset and its manifest, (over)writes <path>.jsonl.report.json beside it, and with
# retired_models = "convert" writes the converted dataset under droptune-converted/.
# https://cloud.google.com/storage/docs/access-control/iam-roles
resource "google_storage_bucket_iam_member" "validator_reads_datasets_writes_reports" {
  bucket = google_storage_bucket.datasets.name
  role   = "roles/storage.objectUser"
  member = google_service_account.function["validator"].member
}

# The poller and the deployer hold no role on the datasets bucket: neither creates a Cloud
# Storage client (services/poller/main.py, services/deployer/main.py and droptune.jobs.poller,
# droptune.deployment with what they import never call droptune.cloud_clients.storage_client).
# Checkpoints, metrics and tuningDataStats come from the Vertex AI job resource, and the
# deployer only passes the final checkpoint's gs:// URI to Vertex AI, which reads it itself
# (as its service agent, granted below).

# Cloud Datastore User (roles/datastore.user), conditioned on droptune's database only: every
# function reads and writes its records (datasets, jobs, claims) in Firestore.
# https://cloud.google.com/firestore/docs/security/iam#conditions
resource "google_project_iam_member" "functions_use_firestore" {
  for_each = local.functions

  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.function[each.key].member

  condition {
    title       = "droptune-database-only"
    description = "Only the droptune Firestore database."
    expression  = local.datastore_condition
  }
}

# Vertex AI User (roles/aiplatform.user): the launcher creates tuning and pipeline jobs; the
# poller gets and cancels them, reads their metrics from each job's experiment (its Metadata
# context, and TensorBoard runs and time series), starts queued ones and follows deploy
# operations; the deployer
# uploads and deploys models and sends the smoke prediction. Vertex AI has no per-job IAM, so
# this is granted on the project. The validator never calls Vertex AI.
# https://cloud.google.com/vertex-ai/docs/general/access-control
resource "google_project_iam_member" "functions_use_vertex_ai" {
  for_each = toset(["launcher", "poller", "deployer"])

  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = google_service_account.function[each.key].member
}

locals {
  publisher_grants = {
    "validator/tune-requests"   = { service = "validator", topic = "tune-requests" }
    "validator/droptune-events" = { service = "validator", topic = "droptune-events" }
    "launcher/droptune-events"  = { service = "launcher", topic = "droptune-events" }
    "poller/droptune-events"    = { service = "poller", topic = "droptune-events" }
    "deployer/droptune-events"  = { service = "deployer", topic = "droptune-events" }
  }
}

# Pub/Sub Publisher (roles/pubsub.publisher) on exactly the topics each function publishes to:
# the validator publishes tune requests and dataset events; the others publish events.
# https://cloud.google.com/pubsub/docs/access-control
resource "google_pubsub_topic_iam_member" "function_publishes" {
  for_each = local.publisher_grants

  topic  = google_pubsub_topic.main[each.value.topic].name
  role   = "roles/pubsub.publisher"
  member = google_service_account.function[each.value.service].member
}

# ---------------------------------------------------------------------------------------
# Push trigger identities: one per subscription, allowed to invoke only its own function
# ---------------------------------------------------------------------------------------

resource "google_service_account" "push_invoker" {
  for_each = local.push_subscriptions

  account_id   = each.value.invoker_account_id
  display_name = "droptune push ${each.key}"
  description  = "Identity in the OIDC token of push subscription ${each.key}; may only invoke droptune-${each.value.service}."
}

# Cloud Run Invoker (roles/run.invoker) on the function's own Cloud Run service only: a gen2
# function is a Cloud Run service, and the push request is authorised as this account.
# https://cloud.google.com/run/docs/triggering/pubsub-push
resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  for_each = local.push_subscriptions

  location = var.region
  name     = google_cloudfunctions2_function.service[each.value.service].service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.push_invoker[each.key].member
}

# Service Account Token Creator (roles/iam.serviceAccountTokenCreator) for the Pub/Sub service
# agent on each push identity only: Pub/Sub mints the OIDC token as that account. Projects
# created before 8 April 2021 need this explicitly; for newer ones it is harmless.
# https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions
resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  for_each = local.push_subscriptions

  service_account_id = google_service_account.push_invoker[each.key].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${local.pubsub_service_agent}"
}

# ---------------------------------------------------------------------------------------
# Service agents: dead-lettering, bucket notifications
# ---------------------------------------------------------------------------------------

# Pub/Sub Publisher on each dead-letter topic and Pub/Sub Subscriber on each source
# subscription, for the Pub/Sub service agent: it forwards undeliverable messages itself.
# https://cloud.google.com/pubsub/docs/handling-failures#grant_forwarding_permissions
resource "google_pubsub_topic_iam_member" "pubsub_agent_publishes_dead_letters" {
  for_each = local.push_subscriptions

  topic  = google_pubsub_topic.dead_letter[each.key].name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${local.pubsub_service_agent}"
}

# Subscriber on the source subscription: the agent acknowledges the message it dead-lettered.
resource "google_pubsub_subscription_iam_member" "pubsub_agent_acks_dead_lettered" {
  for_each = local.push_subscriptions

  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${local.pubsub_service_agent}"
}

# Pub/Sub Publisher on dataset-uploads for the Cloud Storage service agent, which publishes the
# bucket's notifications. https://cloud.google.com/storage/docs/reporting-changes#prereqs
resource "google_pubsub_topic_iam_member" "storage_agent_publishes_uploads" {
  topic  = google_pubsub_topic.main["dataset-uploads"].name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# Cloud Scheduler needs no grant: its service agent (roles/cloudscheduler.serviceAgent) may
# publish to topics of its own project. https://cloud.google.com/scheduler/docs/creating

# The Vertex AI service agent (service-<number>@gcp-sa-aiplatform) is otherwise only created
# the first time Vertex AI is used, so on a fresh project the grants on it below (and the CMEK
# grant in cmek.tf) would fail with "service account does not exist". This asks Service Usage
# to create it now (the same call as `gcloud beta services identity create
# --service=aiplatform.googleapis.com`); it is a no-op where the agent exists, and destroying
# it does nothing. The resource exists only in the google-beta provider (versions.tf).
# https://registry.terraform.io/providers/hashicorp/google-beta/latest/docs/resources/project_service_identity
#
# The open-model fine-tuning agent (gcp-sa-vertex-moss-ft) is not documented as created by
# that call: Vertex AI creates it for the project's first open-model tuning job. If the first
# apply stops with "does not exist" on its vertex_agents_use_datasets grant, apply once with
# grant_vertex_service_agents = false, start one open-model tuning job, and apply again with
# it back to true (infra/README.md, "Vertex AI service agents").
resource "google_project_service_identity" "vertex_ai" {
  provider = google-beta

  project = var.project_id
  service = "aiplatform.googleapis.com"

  depends_on = [google_project_service.enabled]
}

# Storage Object User on the datasets bucket for the Vertex AI service agents: tuning jobs
# read the dataset (and its images) and write checkpoints under var.output_prefix.
resource "google_storage_bucket_iam_member" "vertex_agents_use_datasets" {
  for_each = var.grant_vertex_service_agents ? toset(local.vertex_service_agents) : toset([])

  bucket = google_storage_bucket.datasets.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${each.key}"

  depends_on = [google_project_service_identity.vertex_ai]
}

# ---------------------------------------------------------------------------------------
# Optional custom tuning identity (DROPTUNE_TUNING_SERVICE_ACCOUNT)
# ---------------------------------------------------------------------------------------

resource "google_service_account" "tuning" {
  count = var.create_tuning_service_account ? 1 : 0

  account_id   = "droptune-tuning"
  display_name = "droptune tuning jobs"
  description  = "Identity Vertex AI tuning jobs run as; reaches the datasets bucket only."
}

# Storage Object User on the datasets bucket: the job reads the training/validation files and
# writes its checkpoints and metrics under var.output_prefix.
resource "google_storage_bucket_iam_member" "tuning_uses_datasets" {
  count = var.create_tuning_service_account ? 1 : 0

  bucket = google_storage_bucket.datasets.name
  role   = "roles/storage.objectUser"
  member = google_service_account.tuning[0].member
}

# Service Account User (roles/iam.serviceAccountUser) on the tuning account only, for the
# functions that create jobs (the launcher, and the poller when it starts a queued job):
# creating a job that runs as an account requires iam.serviceAccounts.actAs on it.
# https://cloud.google.com/iam/docs/service-accounts-actas
resource "google_service_account_iam_member" "job_creators_act_as_tuning" {
  for_each = var.create_tuning_service_account ? toset(["launcher", "poller"]) : toset([])

  service_account_id = google_service_account.tuning[0].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.function[each.key].member
}

# ---------------------------------------------------------------------------------------
# Build identity: Cloud Build builds the function images as this account
# https://cloud.google.com/functions/docs/securing/build-custom-sa
# ---------------------------------------------------------------------------------------

resource "google_service_account" "build" {
  account_id   = "droptune-build"
  display_name = "droptune function builds"
  description  = "Cloud Build identity for building the droptune function images."
}

# Storage Object Viewer on the sources bucket only: the build downloads the source archive.
resource "google_storage_bucket_iam_member" "build_reads_sources" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

# Artifact Registry Writer on droptune's image repository only: the build pushes the image.
resource "google_artifact_registry_repository_iam_member" "build_writes_images" {
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}

# Logs Writer on the project (Cloud Logging has no narrower scope for writes): build logs.
resource "google_project_iam_member" "build_writes_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.build.member
}
