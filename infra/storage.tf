# The datasets bucket: users drop JSONL files under var.watch_prefix; the validator writes
# reports beside them and Vertex AI writes tuning outputs under var.output_prefix.
resource "google_storage_bucket" "datasets" {
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Audit Logs (Data Access logs for Cloud Storage), which Google recommends over legacy usage logs; a second log bucket would only add cost.
  name     = local.datasets_bucket_name
  location = var.region
  labels   = local.labels

  # IAM only, never object ACLs, and never public: datasets may hold private data.
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets

  # Overwriting a dataset creates a new generation, which is a new upload (ARCHITECTURE
  # decision 2); versioning keeps the replaced file recoverable for a while.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.dataset_noncurrent_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.storage_agent]
}

# Function source archives. Object names carry the archive's content hash, so objects are
# never overwritten and any code change gives a new object, hence a redeploy.
resource "google_storage_bucket" "sources" {
  #checkov:skip=CKV_GCP_62:Only Cloud Build reads this bucket; Cloud Audit Logs cover access, and a log bucket would only add cost.
  name     = local.sources_bucket_name
  location = var.region
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true # content-addressed build outputs, rebuilt by package_functions.py

  versioning {
    enabled = true
  }

  # Old archives are only needed to roll back; keep them a quarter, then let them go.
  lifecycle_rule {
    condition {
      age = 90
    }
    action {
      type = "Delete"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.storage_agent]
}

resource "google_storage_bucket_object" "function_source" {
  for_each = local.functions

  # e.g. functions/validator-0123456789ab.zip: the name changes whenever the content does.
  name   = "functions/${local.functions_manifest.services[each.key].archive}"
  bucket = google_storage_bucket.sources.name
  source = "${local.functions_dir}/${local.functions_manifest.services[each.key].archive}"
}

# OBJECT_FINALIZE notifications of the datasets bucket go to the validator's topic
# (ARCHITECTURE decision 2); only the watched prefix, so reports and outputs stay quiet.
resource "google_storage_notification" "dataset_uploads" {
  bucket             = google_storage_bucket.datasets.name
  topic              = google_pubsub_topic.main["dataset-uploads"].id
  payload_format     = "JSON_API_V1"
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = var.watch_prefix

  depends_on = [google_pubsub_topic_iam_member.storage_agent_publishes_uploads]
}
