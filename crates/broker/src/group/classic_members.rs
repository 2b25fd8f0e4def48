//! JoinGroup and LeaveGroup from classic members of a consumer group, at
//! the coordinator: the IO around `consumer::classic`. What a join or a
//! leave changes is written before the answer, as for a
//! ConsumerGroupHeartbeat; SyncGroup and Heartbeat change nothing that a
//! restarted coordinator needs.

use kafka_protocol::error::ResponseError;

use super::{
    GroupCoordinator,
    consumer_heartbeat::ImageCatalog,
    state::{Group, JoinOutcome, JoinRequest},
    storage,
};
use crate::broker::Broker;

impl GroupCoordinator {
    /// A classic JoinGroup into a group with consumer-protocol members. A
    /// static member that replaces the last consumer-protocol member takes
    /// the group back to the classic protocol, where policy allows, and
    /// the group stays stable.
    pub(super) fn classic_join_to_consumer_group(
        &self,
        broker: &Broker,
        partition: i32,
        group: &mut Group,
        request: &JoinRequest,
        now: i64,
    ) -> JoinOutcome {
        let settings = &self.settings;
        if !settings.allows_session_timeout(request.session_timeout_ms) {
            return JoinOutcome::error(ResponseError::InvalidSessionTimeout, &request.member_id);
        }
        let Some(consumer) = group.consumer.as_mut() else {
            return JoinOutcome::error(ResponseError::UnknownMemberId, &request.member_id);
        };
        let image = broker.image();
        let catalog = ImageCatalog(&image);
        let before = consumer.snapshot();
        let speaking_consumer = consumer.has_consumer_protocol_members();
        let outcome = consumer.classic_join(request, &catalog, now);
        // Nobody waits on a group that was a consumer group.
        let downgraded = group.downgrade_if_only_classic_left(
            speaking_consumer,
            self.config.migration_policy,
            false,
            &catalog,
            settings,
            now,
        );
        let entries = storage::consumer_entries(group, &before, downgraded.is_some());
        match Self::persist(broker, partition, &entries) {
            Ok(()) => outcome,
            Err(error) => JoinOutcome::error(error, &outcome.member_id),
        }
    }

    /// A LeaveGroup naming classic members of a consumer group.
    pub(super) fn classic_leave_consumer_group(
        &self,
        broker: &Broker,
        partition: i32,
        group: &mut Group,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let Some(consumer) = group.consumer.as_mut() else {
            return Ok(vec![Some(ResponseError::UnknownMemberId); members.len()]);
        };
        let before = consumer.snapshot();
        let results = consumer.classic_leave(members);
        if group.is_empty() {
            group.empty_since_ms = crate::broker::now_ms();
        }
        Self::persist(
            broker,
            partition,
            &storage::consumer_entries(group, &before, false),
        )?;
        Ok(results)
    }
}
