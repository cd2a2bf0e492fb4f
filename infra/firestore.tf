# The Firestore database of droptune's records (SPEC M4.3): datasets/{id}, jobs/{job_id},
# and short-lived documents (event claims, the job-slot allocator lock).
resource "google_firestore_database" "droptune" {
  name        = var.firestore_database
  location_id = local.firestore_location
  type        = "FIRESTORE_NATIVE"

  # Transactions check the current state of a job before each transition (ARCHITECTURE
  # decision 4); optimistic concurrency keeps them short and is Firestore's default.
  concurrency_mode            = "OPTIMISTIC"
  app_engine_integration_mode = "DISABLED"

  # Job history is the audit trail of money spent: recoverable for 7 days, and not
  # deletable by accident.
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.firestore_deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = "DELETE"

  dynamic "cmek_config" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = cmek_config.value
    }
  }

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.firestore_agent]
}

# Composite indexes for the queries droptune runs. Equality on one field plus an order on
# another needs a composite index; an equality match alone (datasets by content hash) is
# served by Firestore's automatic single-field indexes and needs none.
# https://cloud.google.com/firestore/docs/query-data/index-overview
locals {
  composite_indexes = {
    # The poller: jobs whose state is one of the active states, oldest first.
    "jobs-active-by-created" = {
      collection = "jobs"
      fields     = [["state", "ASCENDING"], ["created_at", "ASCENDING"]]
    }
    # The queue: jobs where state == "queued", in arrival order (SPEC M1.11).
    "jobs-queued-by-arrival" = {
      collection = "jobs"
      fields     = [["state", "ASCENDING"], ["queued_at", "ASCENDING"]]
    }
  }

  # Exactly the collections whose documents the code gives an expire_at timestamp (the only
  # expiry field droptune writes; tests/unit/test_infra_topology.py checks this against
  # shared/droptune): Firestore deletes each document some time (typically within a day) after
  # that time.
  # - transition_claims (TRANSITION_CLAIMS_COLLECTION): one claim per published event, kept
  #   for 7 days (CLAIM_RETENTION) after its claim.
  # - job_slots (SLOTS_COLLECTION): the allocator lock, expiring with its 30 s lease; its
  #   holder deletes it on release, so the policy only removes one a crashed holder left behind
  #   (taking over an expired lock does not depend on the deletion).
  ttl_collections = ["job_slots", "transition_claims"]
}

resource "google_firestore_index" "composite" {
  for_each = local.composite_indexes

  database    = google_firestore_database.droptune.name
  collection  = each.value.collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value[0]
      order      = fields.value[1]
    }
  }
}

# TTL policy on expire_at. The field's own single-field indexes are switched off: a timestamp
# that only grows would make them a write hotspot, and no query filters on it.
# https://cloud.google.com/firestore/docs/ttl
resource "google_firestore_field" "expire_at" {
  for_each = toset(local.ttl_collections)

  database   = google_firestore_database.droptune.name
  collection = each.key
  field      = "expire_at"

  ttl_config {}
  index_config {}
}
