output "datasets_bucket" {
  description = "Bucket to drop datasets into: upload JSONL files under gs://<bucket>/<watch_prefix>."
  value       = google_storage_bucket.datasets.name
}

output "upload_prefix" {
  description = "Full gs:// prefix whose uploads are validated and tuned."
  value       = "gs://${google_storage_bucket.datasets.name}/${var.watch_prefix}"
}

output "events_topic" {
  description = "Pub/Sub topic carrying every droptune event (CloudEvents 1.0); attach your own subscription with an attribute filter."
  value       = google_pubsub_topic.main["droptune-events"].id
}

output "topics" {
  description = "Every Pub/Sub topic of the messaging topology, by name, as full resource ids."
  value = merge(
    { for name, topic in google_pubsub_topic.main : name => topic.id },
    { for _, topic in google_pubsub_topic.dead_letter : topic.name => topic.id },
  )
}

output "dead_letter_hold_subscriptions" {
  description = "Pull subscriptions that keep what each function gave up on; read them to inspect or replay poison messages."
  value       = { for key, sub in google_pubsub_subscription.dead_letter_hold : key => sub.id }
}

output "function_uris" {
  description = "HTTPS URL of each function (reachable only through its push subscription's identity)."
  value       = { for name, fn in google_cloudfunctions2_function.service : name => fn.service_config[0].uri }
}

output "function_service_accounts" {
  description = "Runtime service account email of each function."
  value       = { for name, sa in google_service_account.function : name => sa.email }
}

output "function_archives" {
  description = "Content-hashed source archive deployed for each function (changes whenever its code does)."
  value       = { for name, obj in google_storage_bucket_object.function_source : name => "gs://${obj.bucket}/${obj.name}" }
}

output "firestore_database" {
  description = "Firestore database id holding droptune's jobs and datasets."
  value       = google_firestore_database.droptune.name
}

output "tuning_service_account" {
  description = "Service account tuning jobs run as, or null when Vertex AI's service agent is used."
  value       = var.create_tuning_service_account ? google_service_account.tuning[0].email : null
}

output "function_environment" {
  description = "Environment variables given to every function (droptune.settings reads them); handy for running a handler locally against the cloud resources."
  value       = local.function_environment
}
