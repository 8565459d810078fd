//! What Nomad sends: event stream frames, allocation stubs and service registrations, reduced
//! to the fields discovery reads. Unknown fields are ignored, missing ones default.

use super::OrchestratorSelector;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

/// One NDJSON frame of the event stream; a heartbeat is `{}` (index 0, no events).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct EventFrame {
    #[serde(default)]
    pub index: u64,
    #[serde(default)]
    pub events: Option<Vec<NomadEvent>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct NomadEvent {
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub payload: Option<EventPayload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct EventPayload {
    #[serde(default)]
    pub allocation: Option<NomadAllocation>,
}

/// The fields of a Nomad allocation (full or list stub) the allocation watcher reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct NomadAllocation {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "JobID", default)]
    pub job_id: String,
    #[serde(default)]
    pub task_group: String,
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub client_status: String,
    #[serde(default)]
    allocated_resources: Option<AllocatedResources>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AllocatedResources {
    #[serde(default)]
    shared: Option<SharedResources>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SharedResources {
    #[serde(default)]
    networks: Option<Vec<NetworkResource>>,
    #[serde(default)]
    ports: Option<Vec<Port>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkResource {
    #[serde(rename = "IP", default)]
    ip: String,
    #[serde(default)]
    reserved_ports: Option<Vec<Port>>,
    #[serde(default)]
    dynamic_ports: Option<Vec<Port>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Port {
    #[serde(default)]
    label: String,
    value: u16,
}

impl NomadAllocation {
    /// `Shared.Networks[0].IP` (what the E2B API dialled before it used service registrations)
    /// and the labelled port: from the network's reserved or dynamic ports, else the group's
    /// port mappings, else the default.
    pub fn address(&self, selector: &OrchestratorSelector) -> Option<SocketAddr> {
        let shared = self.allocated_resources.as_ref()?.shared.as_ref()?;
        let network = shared.networks.as_ref()?.first()?;
        let ip: IpAddr = network.ip.parse().ok()?;
        let labelled = |ports: &Option<Vec<Port>>| {
            ports
                .iter()
                .flatten()
                .find(|p| p.label == selector.port_label)
                .map(|p| p.value)
        };
        let port = labelled(&network.reserved_ports)
            .or_else(|| labelled(&network.dynamic_ports))
            .or_else(|| labelled(&shared.ports))
            .unwrap_or(selector.default_port);
        Some(SocketAddr::new(ip, port))
    }
}

/// One entry of `GET /v1/service/<name>`: an allocation advertising the Nomad-native service
/// (`provider = "nomad"`), as E2B's orchestrators do on their gRPC port
/// (e2b-dev/infra `iac/modules/job-orchestrator/jobs/orchestrator.hcl`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ServiceRegistration {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "AllocID", default)]
    pub alloc_id: String,
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    #[serde(rename = "JobID", default)]
    pub job_id: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: i64,
}

impl ServiceRegistration {
    /// `Address:Port`; a port Nomad left at 0 falls back to the default, as E2B's API does
    /// (`packages/api/internal/orchestrator/discovery/nomad.go`). `None` when the address is
    /// empty or not an IP: such a registration cannot be dialled.
    pub fn address(&self, default_port: u16) -> Option<SocketAddr> {
        let ip: IpAddr = self.address.parse().ok()?;
        let port = u16::try_from(self.port)
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(default_port);
        Some(SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(json: &str) -> NomadAllocation {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn address_prefers_the_labelled_port_of_the_first_network() {
        let selector = OrchestratorSelector::default();
        let a = alloc(
            r#"{"ID":"a","AllocatedResources":{"Shared":{"Networks":[{"IP":"10.0.0.7","ReservedPorts":[{"Label":"orchestrator-proxy","Value":5007},{"Label":"orchestrator","Value":5018}]}]}}}"#,
        );
        assert_eq!(a.address(&selector), Some("10.0.0.7:5018".parse().unwrap()));
        let dynamic = alloc(
            r#"{"ID":"a","AllocatedResources":{"Shared":{"Networks":[{"IP":"10.0.0.7","ReservedPorts":null,"DynamicPorts":[{"Label":"orchestrator","Value":23456}]}]}}}"#,
        );
        assert_eq!(
            dynamic.address(&selector),
            Some("10.0.0.7:23456".parse().unwrap())
        );
        let group_ports = alloc(
            r#"{"ID":"a","AllocatedResources":{"Shared":{"Networks":[{"IP":"10.0.0.7"}],"Ports":[{"Label":"orchestrator","Value":6008,"To":0,"HostIP":"10.0.0.7"}]}}}"#,
        );
        assert_eq!(
            group_ports.address(&selector),
            Some("10.0.0.7:6008".parse().unwrap())
        );
        let unlabelled =
            alloc(r#"{"ID":"a","AllocatedResources":{"Shared":{"Networks":[{"IP":"10.0.0.7"}]}}}"#);
        assert_eq!(
            unlabelled.address(&selector),
            Some("10.0.0.7:5008".parse().unwrap())
        );
        assert_eq!(alloc(r#"{"ID":"a"}"#).address(&selector), None);
    }

    #[test]
    fn a_registration_is_dialled_at_its_address_and_port() {
        let reg: ServiceRegistration = serde_json::from_str(
            r#"{"Address":"10.0.0.7","AllocID":"a1","CreateIndex":28,"Datacenter":"dc1","ID":"_nomad-task-a1-client-orchestrator-orchestrator-orchestrator","JobID":"orchestrator-dev","ModifyIndex":28,"Namespace":"default","NodeID":"n1","Port":5008,"ServiceName":"orchestrator","Tags":[]}"#,
        )
        .unwrap();
        assert_eq!(reg.address(1), Some("10.0.0.7:5008".parse().unwrap()));
        assert_eq!((reg.alloc_id.as_str(), reg.node_id.as_str()), ("a1", "n1"));
        let no_port: ServiceRegistration =
            serde_json::from_str(r#"{"Address":"10.0.0.8","Port":0}"#).unwrap();
        assert_eq!(
            no_port.address(5008),
            Some("10.0.0.8:5008".parse().unwrap())
        );
        let no_address: ServiceRegistration =
            serde_json::from_str(r#"{"Address":"","Port":5008}"#).unwrap();
        assert_eq!(no_address.address(5008), None);
    }
}
