variable "project_id" {
  type        = string
  description = "Google Cloud project that hosts droptune (passed to the functions as DROPTUNE_PROJECT)."

  validation {
    # Same rule as droptune.settings: a project id, not a project number or name.
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "Region of the functions, the buckets, the Firestore database and the Vertex AI tuning jobs (DROPTUNE_REGION)."
  default     = "us-central1"

  validation {
    # Regions where supervised tuning runs (SPEC M1.2 open models, M3.6 PaLM pipelines); the
    # same list as droptune.settings.KNOWN_REGIONS, so a plan never deploys functions that
    # refuse to start.
    condition = contains([
      "us-central1", "europe-west4", "us-west1", "us-east5", "asia-southeast1", "europe-west3",
      "europe-west2", "asia-northeast1", "us-east4", "us-west4", "northamerica-northeast1",
      "europe-west9", "europe-west1", "asia-northeast3",
    ], var.region)
    error_message = "region must be one where Vertex AI supervised tuning is offered (see SPEC M1.2 and M3.6), e.g. us-central1."
  }
}

variable "datasets_bucket_name" {
  type        = string
  description = "Name of the datasets bucket users drop JSONL files into; null means \"<project_id>-droptune-datasets\"."
  default     = null

  validation {
    condition     = var.datasets_bucket_name == null || can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.datasets_bucket_name))
    error_message = "datasets_bucket_name must be 3-63 lowercase letters, digits, hyphens or underscores (no dots: droptune.settings refuses them)."
  }
}

variable "watch_prefix" {
  type        = string
  description = "Only objects under this prefix of the datasets bucket are validated (DROPTUNE_WATCH_PREFIX); reports and tuning outputs written elsewhere never trigger a validation."
  default     = "datasets/"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-][A-Za-z0-9._/-]*/$", var.watch_prefix)) && !strcontains(var.watch_prefix, "..")
    error_message = "watch_prefix must be a relative object prefix ending with a slash, such as datasets/."
  }
}

variable "output_prefix" {
  type        = string
  description = "Prefix of the datasets bucket where tuning outputs are written, gs://<bucket>/<output_prefix><job_id>/ (DROPTUNE_OUTPUT_PREFIX)."
  default     = "tuned/"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-][A-Za-z0-9._/-]*/$", var.output_prefix)) && !strcontains(var.output_prefix, "..")
    error_message = "output_prefix must be a relative object prefix ending with a slash, such as tuned/."
  }
}

variable "dataset_noncurrent_retention_days" {
  type        = number
  description = "Days an overwritten or deleted dataset version is kept (bucket versioning) before it is removed; lets a user recover a file they replaced."
  default     = 30

  validation {
    condition     = var.dataset_noncurrent_retention_days >= 1 && var.dataset_noncurrent_retention_days <= 3650
    error_message = "dataset_noncurrent_retention_days must be between 1 and 3650."
  }
}

variable "firestore_database" {
  type        = string
  description = "Firestore database id holding jobs and datasets (DROPTUNE_FIRESTORE_DATABASE). A named database keeps droptune apart from a (default) database the project may already have."
  default     = "droptune"

  validation {
    condition     = var.firestore_database == "(default)" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database))
    error_message = "firestore_database must be \"(default)\" or 4-63 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "firestore_location" {
  type        = string
  description = "Firestore location id (a region such as us-central1, or a multi-region such as nam5); null means var.region."
  default     = null

  validation {
    # Firestore's multi-regions (nam5 and nam7 in the United States, eur3 in Europe), or a
    # region id such as us-central1 or northamerica-northeast1.
    # https://cloud.google.com/firestore/docs/locations
    condition = var.firestore_location == null ? true : (
      contains(["nam5", "nam7", "eur3"], var.firestore_location) ||
      can(regex("^[a-z]+-[a-z]+[0-9]+$", var.firestore_location))
    )
    error_message = "firestore_location must be a Firestore multi-region (nam5, nam7, eur3) or a region id such as us-central1, or null for var.region."
  }
}

variable "firestore_deletion_protection" {
  type        = bool
  description = "Refuse to delete the Firestore database (job history) on destroy; set false before `terraform destroy` to remove everything."
  default     = true
}

variable "max_concurrent_jobs" {
  type        = number
  description = "Tuning jobs allowed to run at once in this project (DROPTUNE_MAX_CONCURRENT_JOBS); further jobs wait queued (SPEC M1.11). Keep it at or below your Vertex AI concurrent tuning quota."
  default     = 1

  validation {
    condition     = var.max_concurrent_jobs >= 1 && var.max_concurrent_jobs <= 100 && floor(var.max_concurrent_jobs) == var.max_concurrent_jobs
    error_message = "max_concurrent_jobs must be a whole number from 1 to 100."
  }
}

variable "stall_after_seconds" {
  type        = number
  description = "A job whose state has not moved for this long is reported as stalled (DROPTUNE_STALL_AFTER_SECONDS)."
  default     = 21600

  validation {
    condition     = var.stall_after_seconds >= 60 && var.stall_after_seconds <= 2592000
    error_message = "stall_after_seconds must be between 60 and 2592000 (30 days)."
  }
}

variable "deploy_policy" {
  type        = string
  description = "What happens after a job succeeds (DROPTUNE_DEPLOY): auto deploys on g2-standard-12 + 1 NVIDIA_L4 (SPEC M1.9), shape-from-catalog uses the model's recommended shape, never skips deployment."
  default     = "auto"

  validation {
    condition     = contains(["auto", "shape-from-catalog", "never"], var.deploy_policy)
    error_message = "deploy_policy must be one of auto, shape-from-catalog, never."
  }
}

variable "training_token_budget" {
  type        = number
  description = "Estimated billable training tokens above which a job waits for approval or is rejected (DROPTUNE_TRAINING_TOKEN_BUDGET); null means no budget."
  default     = null

  validation {
    condition     = var.training_token_budget == null ? true : var.training_token_budget >= 1
    error_message = "training_token_budget must be a positive number of tokens, or null."
  }
}

variable "over_budget" {
  type        = string
  description = "What happens to a job over the training-token budget (DROPTUNE_OVER_BUDGET): hold waits as awaiting_approval until `droptune jobs approve`, reject fails it."
  default     = "hold"

  validation {
    condition     = contains(["hold", "reject"], var.over_budget)
    error_message = "over_budget must be hold or reject."
  }
}

variable "retired_models" {
  type        = string
  description = "What happens to datasets for retired PaLM models (SPEC M3; DROPTUNE_RETIRED_MODELS): reject with a migration hint, convert the data to chat and tune the successor model, or allow (launch the PaLM pipeline, which Vertex AI now refuses)."
  default     = "reject"

  validation {
    condition     = contains(["reject", "allow", "convert"], var.retired_models)
    error_message = "retired_models must be reject, allow or convert."
  }
}

variable "default_base_model" {
  type        = string
  description = "Base model used when an upload names none (DROPTUNE_DEFAULT_BASE_MODEL)."
  default     = "google/gemma3@gemma-3-1b-it"

  validation {
    condition     = length(trimspace(var.default_base_model)) > 0
    error_message = "default_base_model must not be empty."
  }
}

variable "poller_schedule" {
  type        = string
  description = "Cron schedule (in poller_time_zone) of the poller tick that tracks running jobs; tuning jobs run for tens of minutes to hours, so every 5 minutes is prompt enough and keeps an idle deployment inside free tiers."
  default     = "*/5 * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.poller_schedule))) == 5
    error_message = "poller_schedule must be a five-field cron expression, such as */5 * * * *."
  }
}

variable "poller_time_zone" {
  type        = string
  description = "IANA time zone of poller_schedule."
  default     = "Etc/UTC"

  validation {
    # A tz database name as Cloud Scheduler takes it: UTC or GMT, or Area/Location with an
    # optional third part (Europe/Paris, America/Argentina/Buenos_Aires, Etc/GMT+5).
    condition     = can(regex("^(UTC|GMT|[A-Z][A-Za-z_]*(/[A-Za-z0-9_+-]+){1,2})$", var.poller_time_zone))
    error_message = "poller_time_zone must be an IANA time zone such as Etc/UTC, UTC or Europe/Paris."
  }
}

variable "kms_key_name" {
  type        = string
  description = "Optional Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for CMEK: the buckets, the topics, the Firestore database, the function images and the tuning jobs (DROPTUNE_KMS_KEY_NAME). Null uses Google-managed keys. The key must be in the deployment's region."
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must look like projects/P/locations/L/keyRings/R/cryptoKeys/K."
  }
}

variable "create_tuning_service_account" {
  type        = bool
  description = "Create a dedicated service account that Vertex AI tuning jobs run as (DROPTUNE_TUNING_SERVICE_ACCOUNT), with access to the datasets bucket only; false lets Vertex AI use its own service agent."
  default     = false
}

variable "grant_vertex_service_agents" {
  type        = bool
  description = "Grant the Vertex AI service agents (service-<number>@gcp-sa-aiplatform and @gcp-sa-vertex-moss-ft) Storage Object User on the datasets bucket, so tuning jobs read datasets and write checkpoints there (seeds 000/002). Terraform creates the first agent if missing; set false for one apply if the second does not exist yet (infra/README.md, \"Vertex AI service agents\")."
  default     = true
}

variable "function_ingress" {
  type        = string
  description = "Ingress of the four functions. ALLOW_INTERNAL_ONLY admits Pub/Sub push from this project and refuses the internet; ALLOW_ALL still requires an authenticated invoker."
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB", "ALLOW_ALL"], var.function_ingress)
    error_message = "function_ingress must be ALLOW_INTERNAL_ONLY, ALLOW_INTERNAL_AND_GCLB or ALLOW_ALL."
  }
}

variable "functions_manifest" {
  type        = string
  description = "Path of the manifest written by infra/package_functions.py (service -> content-hashed archive); null means build/functions/manifest.json at the repository root."
  default     = null

  validation {
    # The archives are read from the manifest's folder, so the path must name the JSON file
    # itself, not that folder.
    condition     = var.functions_manifest == null ? true : can(regex("[^/]\\.json$", var.functions_manifest))
    error_message = "functions_manifest must be the path of the manifest.json that infra/package_functions.py writes (ending in .json), or null."
  }
}

variable "labels" {
  type        = map(string)
  description = "Extra labels for every resource (they are also passed to the functions as DROPTUNE_LABELS and end up on the tuning jobs)."
  default     = {}

  validation {
    condition = alltrue([
      for key, value in var.labels :
      can(regex("^[a-z][a-z0-9_-]{0,62}$", key)) && can(regex("^[a-z0-9_-]{0,63}$", value))
    ])
    error_message = "labels keys must start with a lowercase letter; keys and values may hold lowercase letters, digits, - and _ (at most 63 characters)."
  }
}

variable "force_destroy_buckets" {
  type        = bool
  description = "Let `terraform destroy` delete the buckets even when they still hold datasets, reports and checkpoints."
  default     = false
}
