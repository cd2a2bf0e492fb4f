# The poller tick (SPEC design card step 4): Cloud Scheduler publishes to poller-ticks, whose
# push subscription wakes the poller.
resource "google_cloud_scheduler_job" "poller_tick" {
  name        = "droptune-poller-tick"
  description = "Wakes the droptune poller to track tuning jobs and deployments."
  region      = var.region
  schedule    = var.poller_schedule
  time_zone   = var.poller_time_zone

  pubsub_target {
    topic_name = google_pubsub_topic.main["poller-ticks"].id
    # Same body shape as the local ticker (droptune_local.ticker). Cloud Scheduler sends a
    # fixed body, so the poller must take the time from the message's publish time.
    data = base64encode(jsonencode({ tick = "scheduled" }))
  }

  # A missed tick is covered by the next one; do not pile retries on top of the schedule.
  retry_config {
    retry_count = 0
  }

  depends_on = [google_project_service.enabled]
}
