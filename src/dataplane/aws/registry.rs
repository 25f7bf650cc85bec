//! [`Registry`] on aws-sdk-iot (the control plane; see the parent module for endpoints).

use async_trait::async_trait;
use aws_sdk_iot::operation::add_thing_to_thing_group::AddThingToThingGroupError;
use aws_sdk_iot::operation::create_thing::CreateThingError;
use aws_sdk_iot::operation::create_thing_group::CreateThingGroupError;
use aws_sdk_iot::operation::delete_thing::DeleteThingError;
use aws_sdk_iot::operation::delete_thing_group::DeleteThingGroupError;
use aws_sdk_iot::operation::list_things_in_thing_group::ListThingsInThingGroupError;
use aws_sdk_iot::operation::remove_thing_from_thing_group::RemoveThingFromThingGroupError;
use aws_sdk_iot::operation::search_index::SearchIndexError;
use aws_sdk_iot::types::{AttributePayload, ThingGroupProperties};

use super::{sdk_error, AwsDataPlane};
use crate::dataplane::registry::{
    Attributes, Registry, ThingCreated, ThingDocument, ThingGroupCreated, ThingGroupSpec,
    ThingNamePage, ThingSearchPage, THINGS_INDEX,
};
use crate::dataplane::{DataPlaneError, ErrorKind};

fn payload(attributes: &Attributes) -> Option<AttributePayload> {
    if attributes.is_empty() {
        return None;
    }
    Some(
        AttributePayload::builder()
            .set_attributes(Some(attributes.clone().into_iter().collect()))
            .build(),
    )
}

#[async_trait]
impl Registry for AwsDataPlane {
    async fn create_thing(
        &self,
        thing: &str,
        attributes: &Attributes,
    ) -> Result<ThingCreated, DataPlaneError> {
        let output = self
            .iot
            .create_thing()
            .thing_name(thing)
            .set_attribute_payload(payload(attributes))
            .send()
            .await
            .map_err(|e| sdk_error(e, create_thing_kind))?;
        Ok(ThingCreated {
            thing_name: output.thing_name().unwrap_or(thing).to_string(),
            thing_arn: output.thing_arn().unwrap_or_default().to_string(),
            thing_id: output.thing_id().unwrap_or_default().to_string(),
        })
    }

    async fn delete_thing(
        &self,
        thing: &str,
        expected_version: Option<i64>,
    ) -> Result<(), DataPlaneError> {
        self.iot
            .delete_thing()
            .thing_name(thing)
            .set_expected_version(expected_version)
            .send()
            .await
            .map_err(|e| sdk_error(e, delete_thing_kind))?;
        Ok(())
    }

    async fn create_thing_group(
        &self,
        group: &str,
        spec: &ThingGroupSpec,
    ) -> Result<ThingGroupCreated, DataPlaneError> {
        let properties = if spec.description.is_none() && spec.attributes.is_empty() {
            None
        } else {
            Some(
                ThingGroupProperties::builder()
                    .set_thing_group_description(spec.description.clone())
                    .set_attribute_payload(payload(&spec.attributes))
                    .build(),
            )
        };
        let output = self
            .iot
            .create_thing_group()
            .thing_group_name(group)
            .set_parent_group_name(spec.parent_group_name.clone())
            .set_thing_group_properties(properties)
            .send()
            .await
            .map_err(|e| sdk_error(e, create_group_kind))?;
        Ok(ThingGroupCreated {
            thing_group_name: output.thing_group_name().unwrap_or(group).to_string(),
            thing_group_arn: output.thing_group_arn().unwrap_or_default().to_string(),
            thing_group_id: output.thing_group_id().unwrap_or_default().to_string(),
        })
    }

    async fn delete_thing_group(
        &self,
        group: &str,
        expected_version: Option<i64>,
    ) -> Result<(), DataPlaneError> {
        self.iot
            .delete_thing_group()
            .thing_group_name(group)
            .set_expected_version(expected_version)
            .send()
            .await
            .map_err(|e| sdk_error(e, delete_group_kind))?;
        Ok(())
    }

    async fn add_thing_to_thing_group(
        &self,
        group: &str,
        thing: &str,
    ) -> Result<(), DataPlaneError> {
        self.iot
            .add_thing_to_thing_group()
            .thing_group_name(group)
            .thing_name(thing)
            .send()
            .await
            .map_err(|e| sdk_error(e, add_kind))?;
        Ok(())
    }

    async fn remove_thing_from_thing_group(
        &self,
        group: &str,
        thing: &str,
    ) -> Result<(), DataPlaneError> {
        self.iot
            .remove_thing_from_thing_group()
            .thing_group_name(group)
            .thing_name(thing)
            .send()
            .await
            .map_err(|e| sdk_error(e, remove_kind))?;
        Ok(())
    }

    async fn list_things_in_thing_group(
        &self,
        group: &str,
        recursive: bool,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<ThingNamePage, DataPlaneError> {
        let output = self
            .iot
            .list_things_in_thing_group()
            .thing_group_name(group)
            .recursive(recursive)
            .set_next_token(next_token.map(str::to_owned))
            .set_max_results(max_results)
            .send()
            .await
            .map_err(|e| sdk_error(e, list_kind))?;
        Ok(ThingNamePage {
            things: output.things().to_vec(),
            next_token: output
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        })
    }

    async fn search_index(
        &self,
        query: &str,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<ThingSearchPage, DataPlaneError> {
        let output = self
            .iot
            .search_index()
            .index_name(THINGS_INDEX)
            .query_string(query)
            .set_next_token(next_token.map(str::to_owned))
            .set_max_results(max_results)
            .send()
            .await
            .map_err(|e| sdk_error(e, search_kind))?;
        let things = output
            .things()
            .iter()
            .map(|doc| {
                let mut thing_group_names = doc.thing_group_names().to_vec();
                thing_group_names.sort();
                ThingDocument {
                    thing_name: doc.thing_name().unwrap_or_default().to_string(),
                    thing_id: doc.thing_id().unwrap_or_default().to_string(),
                    attributes: doc
                        .attributes()
                        .map(|a| a.clone().into_iter().collect())
                        .unwrap_or_default(),
                    thing_group_names,
                }
            })
            .collect();
        Ok(ThingSearchPage {
            things,
            next_token: output
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        })
    }
}

fn create_thing_kind(err: &CreateThingError) -> Option<ErrorKind> {
    use CreateThingError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ResourceAlreadyExistsException(_) => ErrorKind::ResourceAlreadyExists,
        E::ResourceNotFoundException(_) => ErrorKind::ResourceNotFound,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::UnauthorizedException(_) => ErrorKind::Unauthorized,
        E::ServiceUnavailableException(_) => ErrorKind::ServiceUnavailable,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        _ => return None,
    })
}

fn delete_thing_kind(err: &DeleteThingError) -> Option<ErrorKind> {
    use DeleteThingError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ResourceNotFoundException(_) => ErrorKind::ResourceNotFound,
        E::VersionConflictException(_) => ErrorKind::VersionConflict,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::UnauthorizedException(_) => ErrorKind::Unauthorized,
        E::ServiceUnavailableException(_) => ErrorKind::ServiceUnavailable,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        _ => return None,
    })
}

fn create_group_kind(err: &CreateThingGroupError) -> Option<ErrorKind> {
    use CreateThingGroupError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ResourceAlreadyExistsException(_) => ErrorKind::ResourceAlreadyExists,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        _ => return None,
    })
}

fn delete_group_kind(err: &DeleteThingGroupError) -> Option<ErrorKind> {
    use DeleteThingGroupError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::VersionConflictException(_) => ErrorKind::VersionConflict,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        _ => return None,
    })
}

fn add_kind(err: &AddThingToThingGroupError) -> Option<ErrorKind> {
    use AddThingToThingGroupError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ResourceNotFoundException(_) => ErrorKind::ResourceNotFound,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        _ => return None,
    })
}

fn remove_kind(err: &RemoveThingFromThingGroupError) -> Option<ErrorKind> {
    use RemoveThingFromThingGroupError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ResourceNotFoundException(_) => ErrorKind::ResourceNotFound,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        _ => return None,
    })
}

fn list_kind(err: &ListThingsInThingGroupError) -> Option<ErrorKind> {
    use ListThingsInThingGroupError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ResourceNotFoundException(_) => ErrorKind::ResourceNotFound,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        _ => return None,
    })
}

fn search_kind(err: &SearchIndexError) -> Option<ErrorKind> {
    use SearchIndexError as E;
    Some(match err {
        E::InvalidQueryException(_) => ErrorKind::InvalidQuery,
        E::IndexNotReadyException(_) => ErrorKind::IndexNotReady,
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ResourceNotFoundException(_) => ErrorKind::ResourceNotFound,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::UnauthorizedException(_) => ErrorKind::Unauthorized,
        E::ServiceUnavailableException(_) => ErrorKind::ServiceUnavailable,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        _ => return None,
    })
}
