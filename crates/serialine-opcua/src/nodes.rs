//! The node manager: Serialine's nodes live in memory (the stack's
//! `InMemoryNodeManager`), their values written by the samplers
//! (`values.rs`); method calls are dispatched here, asynchronously, because
//! a command waits for the line's supervisor to answer.

use crate::methods::{self, MethodKind};
use crate::LineSource;
use async_trait::async_trait;
use opcua::server::address_space::{
    AddressSpace, EventNotifier, MethodBuilder, ObjectBuilder, ObjectTypeBuilder, VariableBuilder,
};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{
    InMemoryNodeManager, InMemoryNodeManagerImpl, InMemoryNodeManagerImplBuilder,
};
use opcua::server::node_manager::{MethodCall, RequestContext, ServerContext};
use opcua::sync::RwLock;
use opcua::types::{
    Argument, DataTypeId, NodeId, ObjectId, ObjectTypeId, QualifiedName, StatusCode,
    VariableTypeId, Variant,
};
use std::collections::HashMap;

pub type SerialineNodeManager = InMemoryNodeManager<SerialineNodes>;

/// Node ids, all strings in Serialine's namespace: `<line>` for the line's
/// object, `<line>.<path>` below it.
pub fn id(ns: u16, line: &str, path: &str) -> NodeId {
    if path.is_empty() {
        NodeId::new(ns, line.to_string())
    } else {
        NodeId::new(ns, format!("{line}.{path}"))
    }
}

/// The event type of Serialine's alarms (subtype of BaseEventType).
pub fn alarm_event_type_id(ns: u16) -> NodeId {
    NodeId::new(ns, "SerialineAlarmEventType")
}

/// The ledger counters, in display order: (browse name, what it counts).
pub const COUNTERS: &[(&str, &str)] = &[
    ("Issued", "serials received in stored blocks"),
    (
        "Available",
        "serials still in blocks, never handed to a device",
    ),
    ("Sent", "sent to a device, no verdict yet"),
    ("Printed", "acknowledged by the device, not yet read back"),
    (
        "Committed",
        "read back and graded, not yet acknowledged upstream",
    ),
    ("Synced", "committed and acknowledged upstream"),
    (
        "Rejected",
        "rejected (mismatch, no-read, low grade, device fault)",
    ),
    (
        "Voided",
        "voided (no verdict at a crash or job end, or fenced)",
    ),
    ("Fenced", "of Voided, voided by the fence after a rollback"),
    (
        "Reported",
        "rejected or voided outcomes acknowledged upstream",
    ),
    ("InFlight", "sent or printed, verdict pending"),
    ("Sampled", "committed units pulled for QA"),
    (
        "Decommissioned",
        "committed units taken out of the supply chain",
    ),
    (
        "Returned",
        "unused serials given back upstream, never printed here",
    ),
];

pub struct SerialineNodes {
    namespace: NamespaceMetadata,
    /// Method node id -> which method of which line.
    methods: HashMap<NodeId, (MethodKind, LineSource)>,
    anonymous_methods: bool,
}

pub struct SerialineNodesBuilder {
    pub lines: Vec<LineSource>,
    pub anonymous_methods: bool,
}

impl InMemoryNodeManagerImplBuilder for SerialineNodesBuilder {
    type Impl = SerialineNodes;

    fn build(self, context: ServerContext, address_space: &mut AddressSpace) -> SerialineNodes {
        let ns = {
            let mut type_tree = context.type_tree.write();
            type_tree
                .namespaces_mut()
                .add_namespace(crate::NAMESPACE_URI)
        };
        address_space.add_namespace(crate::NAMESPACE_URI, ns);
        let mut methods = HashMap::new();
        build_address_space(address_space, ns, &self.lines, &mut methods);
        SerialineNodes {
            namespace: NamespaceMetadata {
                namespace_uri: crate::NAMESPACE_URI.to_string(),
                namespace_index: ns,
                ..Default::default()
            },
            methods,
            anonymous_methods: self.anonymous_methods,
        }
    }
}

fn build_address_space(
    space: &mut AddressSpace,
    ns: u16,
    lines: &[LineSource],
    methods: &mut HashMap<NodeId, (MethodKind, LineSource)>,
) {
    let event_type = alarm_event_type_id(ns);
    ObjectTypeBuilder::new(
        &event_type,
        QualifiedName::new(ns, "SerialineAlarmEventType"),
        "SerialineAlarmEventType",
    )
    .is_abstract(false)
    .subtype_of(ObjectTypeId::BaseEventType)
    .insert(space);
    // The alarm's fields as properties of the type, so that a client can
    // select them by browse path (what asyncua's event filter does).
    for (name, data_type) in [
        ("AlarmKind", DataTypeId::String),
        ("Serial", DataTypeId::String),
        ("Line", DataTypeId::String),
    ] {
        VariableBuilder::new(
            &NodeId::new(ns, format!("SerialineAlarmEventType.{name}")),
            QualifiedName::new(ns, name),
            name,
        )
        .data_type(data_type)
        .property_of(event_type.clone())
        .has_type_definition(VariableTypeId::PropertyType)
        .has_modelling_rule(ObjectId::ModellingRule_Mandatory)
        .insert(space);
    }

    let root = NodeId::new(ns, "Serialine");
    ObjectBuilder::new(&root, QualifiedName::new(ns, "Serialine"), "Serialine")
        .organized_by(ObjectId::ObjectsFolder)
        .has_type_definition(ObjectTypeId::FolderType)
        .event_notifier(EventNotifier::SUBSCRIBE_TO_EVENTS)
        .insert(space);

    for line in lines {
        let l = line.id.as_str();
        let obj = id(ns, l, "");
        ObjectBuilder::new(&obj, QualifiedName::new(ns, l), l)
            .organized_by(root.clone())
            .has_type_definition(ObjectTypeId::BaseObjectType)
            .event_notifier(EventNotifier::SUBSCRIBE_TO_EVENTS)
            .insert(space);
        let var = |space: &mut AddressSpace,
                   parent: &NodeId,
                   path: &str,
                   name: &str,
                   value: Variant,
                   dt: DataTypeId| {
            VariableBuilder::new(&id(ns, l, path), QualifiedName::new(ns, name), name)
                .data_type(dt)
                .value(value)
                .component_of(parent.clone())
                .has_type_definition(VariableTypeId::BaseDataVariableType)
                .insert(space);
        };
        var(
            space,
            &obj,
            "State",
            "State",
            Variant::from("stopped"),
            DataTypeId::String,
        );
        var(
            space,
            &obj,
            "BufferDepth",
            "BufferDepth",
            Variant::from(0u64),
            DataTypeId::UInt64,
        );
        var(
            space,
            &obj,
            "OutboxDepth",
            "OutboxDepth",
            Variant::from(0u64),
            DataTypeId::UInt64,
        );

        let job = id(ns, l, "Job");
        ObjectBuilder::new(&job, QualifiedName::new(ns, "Job"), "Job")
            .component_of(obj.clone())
            .has_type_definition(ObjectTypeId::BaseObjectType)
            .insert(space);
        var(
            space,
            &job,
            "Job.Active",
            "Active",
            Variant::from(false),
            DataTypeId::Boolean,
        );
        for name in ["GTIN", "Lot", "Expiry"] {
            var(
                space,
                &job,
                &format!("Job.{name}"),
                name,
                Variant::from(""),
                DataTypeId::String,
            );
        }
        var(
            space,
            &job,
            "Job.Quantity",
            "Quantity",
            Variant::from(0u64),
            DataTypeId::UInt64,
        );

        let counters = id(ns, l, "Counters");
        ObjectBuilder::new(&counters, QualifiedName::new(ns, "Counters"), "Counters")
            .component_of(obj.clone())
            .has_type_definition(ObjectTypeId::BaseObjectType)
            .insert(space);
        for (name, _) in COUNTERS {
            var(
                space,
                &counters,
                &format!("Counters.{name}"),
                name,
                Variant::from(0u64),
                DataTypeId::UInt64,
            );
        }

        let devices = id(ns, l, "Devices");
        ObjectBuilder::new(&devices, QualifiedName::new(ns, "Devices"), "Devices")
            .component_of(obj.clone())
            .has_type_definition(ObjectTypeId::BaseObjectType)
            .insert(space);

        for kind in [MethodKind::StartJob, MethodKind::StopJob] {
            let name = kind.browse_name();
            let mid = id(ns, l, name);
            let mut b = MethodBuilder::new(&mid, QualifiedName::new(ns, name), name)
                .component_of(obj.clone())
                .executable(true)
                .user_executable(true);
            let inputs: Vec<Argument> = methods::input_arguments(kind);
            if !inputs.is_empty() {
                b = b.input_args(
                    space,
                    &id(ns, l, &format!("{name}.InputArguments")),
                    &inputs,
                );
            }
            b.output_args(
                space,
                &id(ns, l, &format!("{name}.OutputArguments")),
                &methods::output_arguments(),
            )
            .insert(space);
            methods.insert(mid, (kind, line.clone()));
        }
    }
}

/// Adds a device's state variable the first time the line reports it.
pub fn ensure_device(space: &mut AddressSpace, ns: u16, line: &str, device: &str) -> NodeId {
    let node = id(ns, line, &format!("Devices.{device}"));
    if space.find(&node).is_none() {
        VariableBuilder::new(&node, QualifiedName::new(ns, device), device)
            .data_type(DataTypeId::String)
            .value(Variant::from(""))
            .component_of(id(ns, line, "Devices"))
            .has_type_definition(VariableTypeId::BaseDataVariableType)
            .insert(space);
    }
    node
}

#[async_trait]
impl InMemoryNodeManagerImpl for SerialineNodes {
    async fn init(&self, _address_space: &mut AddressSpace, _context: ServerContext) {}

    fn name(&self) -> &str {
        "serialine"
    }

    fn namespaces(&self) -> Vec<NamespaceMetadata> {
        vec![self.namespace.clone()]
    }

    async fn call(
        &self,
        context: &RequestContext,
        _address_space: &RwLock<AddressSpace>,
        methods_to_call: &mut [&mut &mut MethodCall],
    ) -> Result<(), StatusCode> {
        for call in methods_to_call {
            let Some((kind, line)) = self.methods.get(call.method_id()) else {
                call.set_status(StatusCode::BadMethodInvalid);
                continue;
            };
            // The authenticator already refuses anonymous callers
            // (security.rs); checked again here so that no other path
            // into this node manager can run a command without an identity.
            if context.token.is_anonymous() && !self.anonymous_methods {
                tracing::warn!(line = %line.id, method = kind.browse_name(), "OPC UA method call refused: anonymous session");
                call.set_status(StatusCode::BadUserAccessDenied);
                continue;
            }
            let user = context.token.0.clone();
            let (status, message) = methods::run(*kind, line, call.arguments(), &user).await;
            call.set_outputs(vec![Variant::from(status as i32), Variant::from(message)]);
            call.set_status(StatusCode::Good);
        }
        Ok(())
    }
}
