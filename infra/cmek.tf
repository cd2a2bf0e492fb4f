# Optional CMEK (var.kms_key_name). Each Google service that encrypts droptune data with the
# key does so as its own service agent, which needs Encrypter/Decrypter on that key only.
# https://cloud.google.com/kms/docs/cmek
locals {
  cmek_agents = var.kms_key_name == null ? {} : {
    storage           = data.google_storage_project_service_account.gcs.email_address
    pubsub            = local.pubsub_service_agent
    firestore         = "service-${local.project_number}@gcp-sa-firestore.iam.gserviceaccount.com"
    artifact_registry = "service-${local.project_number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
    cloud_functions   = "service-${local.project_number}@gcf-admin-robot.iam.gserviceaccount.com"
    cloud_run         = "service-${local.project_number}@serverless-robot-prod.iam.gserviceaccount.com"
    vertex_ai         = "service-${local.project_number}@gcp-sa-aiplatform.iam.gserviceaccount.com"
  }
}

# Each agent is its own resource so that the resources using the key can depend on exactly
# the grant they need (a bucket created before its agent may use the key fails).
# Cloud Storage encrypts the datasets and sources buckets' objects with the key.
resource "google_kms_crypto_key_iam_member" "storage_agent" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${local.cmek_agents.storage}"
}

# Pub/Sub encrypts stored messages of every topic with the key.
resource "google_kms_crypto_key_iam_member" "pubsub_agent" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${local.cmek_agents.pubsub}"
}

# Firestore encrypts the database with the key (set at creation, cannot change later).
resource "google_kms_crypto_key_iam_member" "firestore_agent" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${local.cmek_agents.firestore}"
}

# Artifact Registry encrypts the function images with the key.
resource "google_kms_crypto_key_iam_member" "artifact_registry_agent" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${local.cmek_agents.artifact_registry}"
}

# Cloud Functions, Cloud Run (the function's service) and Vertex AI (tuning jobs and endpoints
# given DROPTUNE_KMS_KEY_NAME) encrypt what they create for droptune with the key too.
resource "google_kms_crypto_key_iam_member" "compute_agents" {
  for_each = var.kms_key_name == null ? toset([]) : toset(["cloud_functions", "cloud_run", "vertex_ai"])

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${local.cmek_agents[each.key]}"

  # The Vertex AI agent may not exist yet on a fresh project (iam.tf creates it).
  depends_on = [google_project_service_identity.vertex_ai]
}
