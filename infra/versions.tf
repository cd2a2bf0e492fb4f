terraform {
  # 1.5 is the oldest release with the features used here (optional object attributes,
  # check blocks); CI pins the exact binary through a Cloud Build substitution.
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # Exact pin: every argument used here was checked against the 6.50.0 schema, and an
      # unreviewed provider upgrade must not change a plan. Bump it deliberately, with a plan.
      version = "= 6.50.0"
    }
    # Only for google_project_service_identity (iam.tf), which creates the Vertex AI service
    # agent on a fresh project and exists in no GA provider. Pinned to the same release as
    # google, for the same reason; bump the two together.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "= 6.50.0"
    }
  }

  # State lives in a bucket you create once (see infra/README.md); the name is given at
  # `terraform init -backend-config="bucket=..."` so that no project name is committed here.
  backend "gcs" {
    prefix = "droptune"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  # Every resource the provider creates carries the droptune labels, including those whose
  # labels argument is not written out below; resources that set labels merge with these.
  default_labels = local.labels
}

# Same project, region and labels as google; used only where a resource needs the beta API.
provider "google-beta" {
  project = var.project_id
  region  = var.region

  default_labels = local.labels
}
