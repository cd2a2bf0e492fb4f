# The messaging topology, written out name for name as droptune.topology.TOPOLOGY declares it
# (tests/unit/test_infra_topology.py parses this file and compares the two).

locals {
  # Topics the services publish to or are triggered from.
  topics = {
    "dataset-uploads" = "Cloud Storage OBJECT_FINALIZE notifications of the datasets bucket"
    "tune-requests"   = "validated datasets with resolved options, one message per tuning job"
    "droptune-events" = "every droptune event (CloudEvents 1.0); subscribe with attribute filters"
    "poller-ticks"    = "scheduler ticks that wake the poller"
    "job-control"     = "commands for running jobs (cancel)"
  }

  # One push subscription per (topic, function). Each has its own dead-letter topic, a pull
  # "hold" subscription on it that keeps what the function gave up on for inspection, and its
  # own invoker service account (account ids are at most 30 characters, hence the short ones).
  push_subscriptions = {
    "validator-dataset-uploads" = {
      topic                 = "dataset-uploads"
      service               = "validator"
      dead_letter_topic     = "validator-dataset-uploads-dead-letter"
      hold_subscription     = "validator-dataset-uploads-dead-letter-hold"
      invoker_account_id    = "dt-push-validator-uploads"
      ack_deadline_seconds  = 600
      max_delivery_attempts = 5
      minimum_backoff       = "10s"
      maximum_backoff       = "600s"
      filter                = ""
    }
    "launcher-tune-requests" = {
      topic                 = "tune-requests"
      service               = "launcher"
      dead_letter_topic     = "launcher-tune-requests-dead-letter"
      hold_subscription     = "launcher-tune-requests-dead-letter-hold"
      invoker_account_id    = "dt-push-launcher-requests"
      ack_deadline_seconds  = 120
      max_delivery_attempts = 5
      minimum_backoff       = "10s"
      maximum_backoff       = "600s"
      filter                = ""
    }
    # A failed tick is superseded by the next one: short backoff.
    "poller-ticks" = {
      topic                 = "poller-ticks"
      service               = "poller"
      dead_letter_topic     = "poller-ticks-dead-letter"
      hold_subscription     = "poller-ticks-dead-letter-hold"
      invoker_account_id    = "dt-push-poller-ticks"
      ack_deadline_seconds  = 300
      max_delivery_attempts = 5
      minimum_backoff       = "10s"
      maximum_backoff       = "60s"
      filter                = ""
    }
    "poller-job-control" = {
      topic                 = "job-control"
      service               = "poller"
      dead_letter_topic     = "poller-job-control-dead-letter"
      hold_subscription     = "poller-job-control-dead-letter-hold"
      invoker_account_id    = "dt-push-poller-control"
      ack_deadline_seconds  = 120
      max_delivery_attempts = 5
      minimum_backoff       = "10s"
      maximum_backoff       = "600s"
      filter                = ""
    }
    # The deployer is woken only by successful jobs; it checks the type again (a filter is an
    # optimisation, not a guarantee the handler may rely on).
    "deployer-job-succeeded" = {
      topic                 = "droptune-events"
      service               = "deployer"
      dead_letter_topic     = "deployer-job-succeeded-dead-letter"
      hold_subscription     = "deployer-job-succeeded-dead-letter-hold"
      invoker_account_id    = "dt-push-deployer-succeeded"
      ack_deadline_seconds  = 120
      max_delivery_attempts = 5
      minimum_backoff       = "10s"
      maximum_backoff       = "600s"
      filter                = "attributes.type = \"droptune.job.succeeded\""
    }
  }

  # How long the hold subscriptions keep a dead-lettered message: 7 days, Pub/Sub's maximum.
  hold_message_retention = "604800s"
}

resource "google_pubsub_topic" "main" {
  for_each = local.topics

  name         = each.key
  labels       = local.labels
  kms_key_name = var.kms_key_name

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

resource "google_pubsub_topic" "dead_letter" {
  for_each = local.push_subscriptions

  name         = each.value.dead_letter_topic
  labels       = local.labels
  kms_key_name = var.kms_key_name

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

# Push subscriptions deliver straight to the function's HTTPS URL (decision record 0002): the
# same wiring as the local stack, with a dead-letter topic and bounded attempts on each.
resource "google_pubsub_subscription" "push" {
  for_each = local.push_subscriptions

  name   = each.key
  topic  = google_pubsub_topic.main[each.value.topic].id
  labels = local.labels
  filter = each.value.filter

  ack_deadline_seconds = each.value.ack_deadline_seconds
  # Unacknowledged messages are worthless after a week; never let the subscription expire
  # for lack of activity (an idle deployment must keep its wiring).
  message_retention_duration = "604800s"
  expiration_policy {
    ttl = ""
  }

  push_config {
    push_endpoint = google_cloudfunctions2_function.service[each.value.service].service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.push_invoker[each.key].email
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = each.value.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = each.value.minimum_backoff
    maximum_backoff = each.value.maximum_backoff
  }

  # Dead-lettering needs the Pub/Sub service agent's grants to be in place first.
  depends_on = [
    google_pubsub_topic_iam_member.pubsub_agent_publishes_dead_letters,
    google_cloud_run_v2_service_iam_member.push_invoker,
  ]
}

resource "google_pubsub_subscription" "dead_letter_hold" {
  for_each = local.push_subscriptions

  name   = each.value.hold_subscription
  topic  = google_pubsub_topic.dead_letter[each.key].id
  labels = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = local.hold_message_retention
  expiration_policy {
    ttl = ""
  }
}
