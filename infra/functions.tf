# Where Cloud Build stores the four function images. A repository of our own (instead of the
# auto-created gcf-artifacts) carries labels, CMEK, and a cleanup policy that bounds the
# storage an idle deployment pays for.
resource "google_artifact_registry_repository" "functions" {
  repository_id = "droptune-functions"
  location      = var.region
  format        = "DOCKER"
  description   = "Images of the droptune Cloud Functions, built by Cloud Build from the source archives."
  labels        = local.labels
  kms_key_name  = var.kms_key_name

  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.artifact_registry_agent]
}

# The four functions are HTTP functions (no Eventarc trigger): the push subscriptions in
# pubsub.tf call them, and functions-framework turns the Pub/Sub push body into a
# google.cloud.pubsub.topic.v1.messagePublished CloudEvent for the handler (decision 0002).
resource "google_cloudfunctions2_function" "service" {
  for_each = local.functions

  name         = "droptune-${each.key}"
  location     = var.region
  description  = each.value.description
  labels       = local.labels
  kms_key_name = var.kms_key_name

  build_config {
    runtime           = "python311"
    entry_point       = each.value.entry_point
    docker_repository = google_artifact_registry_repository.functions.id
    service_account   = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.function_source[each.key].name
      }
    }
  }

  service_config {
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    timeout_seconds                  = each.value.timeout_seconds
    min_instance_count               = 0 # idle costs nothing; a cold start is fine for events
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = 1
    ingress_settings                 = var.function_ingress
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.function[each.key].email
    environment_variables            = local.function_environment
  }

  depends_on = [
    google_project_service.enabled,
    google_artifact_registry_repository_iam_member.build_writes_images,
    google_storage_bucket_iam_member.build_reads_sources,
    google_project_iam_member.build_writes_logs,
  ]
}
