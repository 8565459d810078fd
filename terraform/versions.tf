terraform {
  # 1.5 is what e2b-dev/infra pins for iac/provider-gcp, so this module can be
  # called from that tree. Nothing here needs a newer Terraform (no
  # write-only attributes, no cross-variable validation).
  required_version = ">= 1.5.0"

  required_providers {
    nomad = {
      source = "hashicorp/nomad"
      # nomad_variable arrived in 2.0.0; 2.1.0 is the version e2b-dev/infra
      # pins, so "~> 2.1" accepts that pin and any later 2.x, but not a 3.0
      # with breaking changes.
      version = "~> 2.1"
    }
  }
}
