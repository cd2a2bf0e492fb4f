# The APIs droptune uses. Disabling on destroy is off: other workloads in the project may
# rely on them, and re-enabling is slow.
locals {
  apis = toset([
    "aiplatform.googleapis.com",       # tuning jobs, pipeline jobs, endpoints
    "artifactregistry.googleapis.com", # function images
    "cloudbuild.googleapis.com",       # builds the function images
    "cloudfunctions.googleapis.com",   # the four functions (gen2)
    "cloudkms.googleapis.com",         # CMEK (harmless when unused)
    "cloudscheduler.googleapis.com",   # the poller tick
    "compute.googleapis.com",          # Vertex AI endpoints run on Compute Engine machine types
    "eventarc.googleapis.com",         # required by the Cloud Functions gen2 API even for HTTP functions
    "firestore.googleapis.com",        # jobs and datasets records
    "iam.googleapis.com",              # service accounts
    "logging.googleapis.com",          # function and build logs
    "pubsub.googleapis.com",           # the messaging topology
    "run.googleapis.com",              # gen2 functions are Cloud Run services
    "storage.googleapis.com",          # datasets and sources buckets
  ])
}

resource "google_project_service" "enabled" {
  for_each = local.apis

  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}
