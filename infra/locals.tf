data "google_project" "this" {
  project_id = var.project_id
}

locals {
  labels = merge(var.labels, {
    app        = "droptune"
    managed-by = "terraform"
  })

  datasets_bucket_name = coalesce(var.datasets_bucket_name, "${var.project_id}-droptune-datasets")
  sources_bucket_name  = "${var.project_id}-droptune-sources"
  firestore_location   = coalesce(var.firestore_location, var.region)
  project_number       = data.google_project.this.number

  functions_manifest = jsondecode(file(coalesce(var.functions_manifest, "${path.module}/../build/functions/manifest.json")))
  functions_dir      = dirname(coalesce(var.functions_manifest, "${path.module}/../build/functions/manifest.json"))

  # One entry per Cloud Function (gen2). Sizes come from what each handler does:
  # - validator: streams the dataset line by line, so memory is bounded whatever the file size
  #   (25 MiB RSS measured in docs/benchmarks.md) plus the Google client libraries; it is
  #   CPU-bound (JSON parsing), so it gets a whole vCPU. Its timeout matches the 600 s ack
  #   deadline of its subscription minus a margin, leaving room for a 1 GB file at the measured
  #   throughput, and never outlives the delivery it serves (which would cause a duplicate).
  # - launcher/poller/deployer: a few API calls each; google-cloud-aiplatform alone imports
  #   ~200 MB, hence 512Mi. Timeouts stay under each subscription's ack deadline for the same
  #   reason. The poller visits every active job in bounded parallel within one tick.
  # cpu = null keeps the default of the memory tier (0.333 vCPU at 512Mi): enough for I/O waits.
  # max_instances bounds spend and fan-out; one poller instance is enough and avoids two ticks
  # racing (they would be harmless, only wasteful: transitions are transactions).
  functions = {
    validator = {
      entry_point     = "handle_dataset_upload"
      description     = "Validates a dropped JSONL dataset and publishes a tune request or a rejection."
      memory          = "1Gi"
      cpu             = "1"
      timeout_seconds = 540
      max_instances   = 10
    }
    launcher = {
      entry_point     = "handle_tune_request"
      description     = "Claims the job in Firestore and creates the Vertex AI tuning job, or queues it."
      memory          = "512Mi"
      cpu             = null
      timeout_seconds = 110
      max_instances   = 5
    }
    poller = {
      entry_point     = "handle_poller_message"
      description     = "Tracks every active tuning job and deployment, starts queued jobs, applies job-control commands."
      memory          = "512Mi"
      cpu             = null
      timeout_seconds = 280
      max_instances   = 1
    }
    deployer = {
      entry_point     = "handle_job_succeeded"
      description     = "Starts the deployment of a succeeded job's final checkpoint to a Vertex AI endpoint."
      memory          = "512Mi"
      cpu             = null
      timeout_seconds = 110
      max_instances   = 5
    }
  }

  tuning_service_account_email = var.create_tuning_service_account ? google_service_account.tuning[0].email : ""

  # What every function reads through droptune.settings.Settings.from_environ. Empty strings
  # mean "not set" there, so optional settings need no conditional keys.
  function_environment = {
    DROPTUNE_PROJECT                = var.project_id
    DROPTUNE_DATASETS_BUCKET        = google_storage_bucket.datasets.name
    DROPTUNE_REGION                 = var.region
    DROPTUNE_WATCH_PREFIX           = var.watch_prefix
    DROPTUNE_OUTPUT_PREFIX          = var.output_prefix
    DROPTUNE_TUNE_TOPIC             = google_pubsub_topic.main["tune-requests"].name
    DROPTUNE_EVENTS_TOPIC           = google_pubsub_topic.main["droptune-events"].name
    DROPTUNE_CONTROL_TOPIC          = google_pubsub_topic.main["job-control"].name
    DROPTUNE_FIRESTORE_DATABASE     = google_firestore_database.droptune.name
    DROPTUNE_MAX_CONCURRENT_JOBS    = tostring(var.max_concurrent_jobs)
    DROPTUNE_STALL_AFTER_SECONDS    = tostring(var.stall_after_seconds)
    DROPTUNE_DEPLOY                 = var.deploy_policy
    DROPTUNE_RETIRED_MODELS         = var.retired_models
    DROPTUNE_DEFAULT_BASE_MODEL     = var.default_base_model
    DROPTUNE_TUNING_SERVICE_ACCOUNT = local.tuning_service_account_email
    DROPTUNE_KMS_KEY_NAME           = var.kms_key_name == null ? "" : var.kms_key_name
    DROPTUNE_LABELS                 = join(",", [for key, value in local.labels : "${key}=${value}"])
    DROPTUNE_TRAINING_TOKEN_BUDGET  = var.training_token_budget == null ? "" : tostring(var.training_token_budget)
    DROPTUNE_OVER_BUDGET            = var.over_budget
  }
}
