//! [`DataPlane`] on aws-sdk-iotdataplane and
//! [`Registry`](super::registry::Registry) on aws-sdk-iot: real AWS, moto,
//! or `shadowsync dataplane serve`.
//!
//! The registry is AWS IoT's control plane, on the regional endpoint
//! (`iot.REGION.amazonaws.com`, which the SDK resolves), not on the account's data
//! endpoint. With `--endpoint-url` both clients go to the given URL: that is how the local
//! server and moto serve both APIs.
//!
//! The SDK's own retries are off: the [`resilient`](super::resilient) wrapper owns the
//! whole retry budget, so that throttling is counted and backed off in one place.

mod registry;

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sdk_iotdataplane::config::Region;
use aws_sdk_iotdataplane::error::{ErrorMetadata, ProvideErrorMetadata, SdkError};
use aws_sdk_iotdataplane::operation::delete_thing_shadow::DeleteThingShadowError;
use aws_sdk_iotdataplane::operation::get_retained_message::GetRetainedMessageError;
use aws_sdk_iotdataplane::operation::get_thing_shadow::GetThingShadowError;
use aws_sdk_iotdataplane::operation::list_named_shadows_for_thing::ListNamedShadowsForThingError;
use aws_sdk_iotdataplane::operation::list_retained_messages::ListRetainedMessagesError;
use aws_sdk_iotdataplane::operation::publish::PublishError;
use aws_sdk_iotdataplane::operation::update_thing_shadow::UpdateThingShadowError;
use aws_sdk_iotdataplane::primitives::Blob;
use aws_sdk_iotdataplane::types::PayloadFormatIndicator;
use bytes::Bytes;
use serde_json::Value;

use super::{
    DataPlane, DataPlaneError, ErrorKind, NamedShadowPage, PayloadFormat, PublishRequest,
    RetainedMessageData, RetainedMessagePage, RetainedTopicSummary, ShadowDeleted, ShadowDocument,
    UserProperty,
};

/// Time to open a TCP + TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time without a byte from the server once a request is sent.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// One attempt, end to end (the SDK makes exactly one: its retries are off).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the credential chain may look for credentials at start-up.
const CREDENTIALS_PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Region used against a loopback endpoint when none is configured.
const LOOPBACK_REGION: &str = "us-east-1";

/// How to reach the data plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsOptions {
    /// `--endpoint-url`; `None` = discover the account's `iot:Data-ATS` endpoint.
    pub endpoint_url: Option<String>,
    /// `--region`; `None` = the AWS default chain (`AWS_REGION`, profile).
    pub region: Option<String>,
}

/// Why [`AwsDataPlane::connect`] failed. The messages say what to set.
#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    #[error(
        "no AWS region configured: set --region, the AWS_REGION environment variable, \
         or `region` in the AWS profile"
    )]
    MissingRegion,
    #[error(
        "no usable AWS credentials ({detail}); provide them through the AWS default chain \
         (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, IRSA (AWS_ROLE_ARN + \
         AWS_WEB_IDENTITY_TOKEN_FILE), EKS Pod Identity, or the instance metadata service)"
    )]
    MissingCredentials { detail: String },
    #[error("invalid endpoint URL {url:?}: {reason}")]
    InvalidEndpoint { url: String, reason: String },
    #[error(
        "cannot discover the IoT data endpoint with iot:DescribeEndpoint \
         (endpointType iot:Data-ATS): {0}; grant iot:DescribeEndpoint or pass --endpoint-url"
    )]
    EndpointDiscovery(String),
}

/// The AWS IoT data plane (and registry) through the AWS SDK.
#[derive(Clone, Debug)]
pub struct AwsDataPlane {
    client: aws_sdk_iotdataplane::Client,
    /// The control plane, for the [`Registry`] operations.
    iot: aws_sdk_iot::Client,
    endpoint: String,
}

impl AwsDataPlane {
    /// Resolves region, credentials and endpoint, and builds the client.
    ///
    /// Against a loopback endpoint (the local data plane or moto, which check no
    /// signature) missing credentials and region fall back to dummy values; anywhere
    /// else they are an error.
    pub async fn connect(options: AwsOptions) -> Result<AwsDataPlane, AwsSetupError> {
        let endpoint_url = match options.endpoint_url.as_deref() {
            Some(url) => Some(normalize_endpoint(url)?),
            None => None,
        };
        let loopback = endpoint_url.as_deref().is_some_and(is_loopback_url);

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts());
        if let Some(region) = options.region.as_deref().filter(|r| !r.is_empty()) {
            loader = loader.region(Region::new(region.to_owned()));
        }
        let sdk_config = loader.load().await;

        let region = match sdk_config.region() {
            Some(region) => region.clone(),
            None if loopback => {
                tracing::info!(
                    region = LOOPBACK_REGION,
                    "no AWS region configured; using a default for the loopback endpoint"
                );
                Region::from_static(LOOPBACK_REGION)
            }
            None => return Err(AwsSetupError::MissingRegion),
        };

        let credentials = match probe_credentials(sdk_config.credentials_provider()).await {
            Ok(provider) => provider,
            Err(err) if loopback => {
                tracing::info!(
                    reason = %err,
                    "no AWS credentials found; using static dummy credentials for the loopback endpoint"
                );
                SharedCredentialsProvider::new(Credentials::new(
                    "shadowsync-local",
                    "shadowsync-local",
                    None,
                    None,
                    "shadowsync-loopback",
                ))
            }
            Err(err) => return Err(err),
        };

        // The control plane: the given URL, else the SDK's regional endpoint.
        let mut iot_config = aws_sdk_iot::config::Builder::from(&sdk_config)
            .region(region.clone())
            .credentials_provider(credentials.clone())
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts());
        if let Some(url) = &endpoint_url {
            iot_config = iot_config.endpoint_url(url.clone());
        }
        let iot = aws_sdk_iot::Client::from_conf(iot_config.build());

        let endpoint = match endpoint_url {
            Some(url) => url,
            None => discover_endpoint(&sdk_config, &region, &credentials).await?,
        };
        tracing::debug!(%endpoint, region = %region, "AWS IoT data plane client configured");

        let config = aws_sdk_iotdataplane::config::Builder::from(&sdk_config)
            .region(region)
            .credentials_provider(credentials)
            .endpoint_url(endpoint.clone())
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts())
            .build();
        Ok(AwsDataPlane {
            client: aws_sdk_iotdataplane::Client::from_conf(config),
            iot,
            endpoint,
        })
    }

    /// The endpoint in use (`https://...-ats.iot.REGION.amazonaws.com` or the one given).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build()
}

/// Asks the chain for credentials once, so that a missing set-up fails at start-up
/// with a clear message instead of on every call. The provider (not the credentials)
/// is kept, so that expiring credentials (IRSA, Pod Identity) are refreshed.
async fn probe_credentials(
    provider: Option<SharedCredentialsProvider>,
) -> Result<SharedCredentialsProvider, AwsSetupError> {
    let Some(provider) = provider else {
        return Err(AwsSetupError::MissingCredentials {
            detail: "no credential provider configured".into(),
        });
    };
    // The chain answers with the last provider's error when none had credentials
    // (often IMDS being unreachable): show it, it tells where the chain looked last.
    match tokio::time::timeout(CREDENTIALS_PROBE_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(provider),
        Ok(Err(err)) => Err(AwsSetupError::MissingCredentials {
            detail: error_chain(&err),
        }),
        Err(_) => Err(AwsSetupError::MissingCredentials {
            detail: format!(
                "the credential chain found nothing within {}s",
                CREDENTIALS_PROBE_TIMEOUT.as_secs()
            ),
        }),
    }
}

async fn discover_endpoint(
    sdk_config: &aws_config::SdkConfig,
    region: &Region,
    credentials: &SharedCredentialsProvider,
) -> Result<String, AwsSetupError> {
    // A one-off call at start-up: the SDK's standard retries are welcome here.
    let config = aws_sdk_iot::config::Builder::from(sdk_config)
        .region(region.clone())
        .credentials_provider(credentials.clone())
        .retry_config(RetryConfig::standard())
        .build();
    let output = aws_sdk_iot::Client::from_conf(config)
        .describe_endpoint()
        .endpoint_type("iot:Data-ATS")
        .send()
        .await
        .map_err(|err| {
            let text = match err.as_service_error() {
                Some(service) if service.message().is_some() => format!(
                    "{}: {}",
                    service.code().unwrap_or("error"),
                    service.message().unwrap_or_default()
                ),
                _ => error_chain(&err),
            };
            AwsSetupError::EndpointDiscovery(text)
        })?;
    match output.endpoint_address() {
        Some(address) if !address.is_empty() => Ok(format!("https://{address}")),
        _ => Err(AwsSetupError::EndpointDiscovery(
            "the answer has no endpointAddress".into(),
        )),
    }
}

/// Checks the URL has a scheme and a host, and drops a trailing `/`.
fn normalize_endpoint(url: &str) -> Result<String, AwsSetupError> {
    let invalid = |reason: &str| AwsSetupError::InvalidEndpoint {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| invalid("it must start with http:// or https://"))?;
    if url_host(rest).is_empty() {
        return Err(invalid("it has no host"));
    }
    Ok(trimmed.to_owned())
}

/// The host of `host[:port][/path]` (brackets kept off an IPv6 literal).
fn url_host(after_scheme: &str) -> &str {
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    authority.split(':').next().unwrap_or_default()
}

/// 127.0.0.0/8, `localhost` and `[::1]`: endpoints that cannot be AWS.
fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let host = url_host(rest).trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[async_trait]
impl DataPlane for AwsDataPlane {
    async fn get_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDocument, DataPlaneError> {
        let output = self
            .client
            .get_thing_shadow()
            .thing_name(thing)
            .set_shadow_name(shadow.map(str::to_owned))
            .send()
            .await
            .map_err(|e| sdk_error(e, get_shadow_kind))?;
        parse_json(output.payload().map(Blob::as_ref), "GetThingShadow")
    }

    async fn update_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
        payload: Bytes,
    ) -> Result<ShadowDocument, DataPlaneError> {
        let output = self
            .client
            .update_thing_shadow()
            .thing_name(thing)
            .set_shadow_name(shadow.map(str::to_owned))
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| sdk_error(e, update_shadow_kind))?;
        parse_json(output.payload().map(Blob::as_ref), "UpdateThingShadow")
    }

    async fn delete_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDeleted, DataPlaneError> {
        let output = self
            .client
            .delete_thing_shadow()
            .thing_name(thing)
            .set_shadow_name(shadow.map(str::to_owned))
            .send()
            .await
            .map_err(|e| sdk_error(e, delete_shadow_kind))?;
        parse_json(Some(output.payload().as_ref()), "DeleteThingShadow")
    }

    async fn list_named_shadows_for_thing(
        &self,
        thing: &str,
        next_token: Option<&str>,
        page_size: Option<i32>,
    ) -> Result<NamedShadowPage, DataPlaneError> {
        let output = self
            .client
            .list_named_shadows_for_thing()
            .thing_name(thing)
            .set_next_token(next_token.map(str::to_owned))
            .set_page_size(page_size)
            .send()
            .await
            .map_err(|e| sdk_error(e, list_shadows_kind))?;
        Ok(NamedShadowPage {
            // AWS sends `results: null` for a thing without named shadows.
            results: output.results.unwrap_or_default(),
            next_token: output.next_token.filter(|t| !t.is_empty()),
            timestamp: output.timestamp,
        })
    }

    async fn publish(&self, request: &PublishRequest) -> Result<(), DataPlaneError> {
        let user_properties = if request.user_properties.is_empty() {
            None
        } else {
            Some(encode_user_properties(&request.user_properties))
        };
        self.client
            .publish()
            .topic(&request.topic)
            .payload(Blob::new(request.payload.clone()))
            .qos(request.qos)
            .retain(request.retain)
            .set_content_type(request.content_type.clone())
            .set_response_topic(request.response_topic.clone())
            .set_message_expiry(request.message_expiry)
            .set_user_properties(user_properties)
            .set_payload_format_indicator(request.payload_format_indicator.map(|f| match f {
                PayloadFormat::UnspecifiedBytes => PayloadFormatIndicator::UnspecifiedBytes,
                PayloadFormat::Utf8Data => PayloadFormatIndicator::Utf8Data,
            }))
            .set_correlation_data(request.correlation_data.clone())
            .send()
            .await
            .map_err(|e| sdk_error(e, publish_kind))?;
        Ok(())
    }

    async fn get_retained_message(
        &self,
        topic: &str,
    ) -> Result<RetainedMessageData, DataPlaneError> {
        let output = self
            .client
            .get_retained_message()
            .topic(topic)
            .send()
            .await
            .map_err(|e| sdk_error(e, get_retained_kind))?;
        let user_properties = match output.user_properties() {
            Some(blob) => decode_user_properties(blob.as_ref())?,
            None => Vec::new(),
        };
        Ok(RetainedMessageData {
            topic: output.topic.clone().unwrap_or_else(|| topic.to_owned()),
            payload: output
                .payload
                .map(|b| Bytes::from(b.into_inner()))
                .unwrap_or_default(),
            qos: output.qos,
            last_modified_time: output.last_modified_time,
            user_properties,
        })
    }

    async fn list_retained_messages(
        &self,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<RetainedMessagePage, DataPlaneError> {
        let output = self
            .client
            .list_retained_messages()
            .set_next_token(next_token.map(str::to_owned))
            .set_max_results(max_results)
            .send()
            .await
            .map_err(|e| sdk_error(e, list_retained_kind))?;
        Ok(RetainedMessagePage {
            retained_topics: output
                .retained_topics
                .unwrap_or_default()
                .into_iter()
                .map(|s| RetainedTopicSummary {
                    topic: s.topic.unwrap_or_default(),
                    payload_size: s.payload_size,
                    qos: s.qos,
                    last_modified_time: s.last_modified_time,
                })
                .collect(),
            next_token: output.next_token.filter(|t| !t.is_empty()),
        })
    }
}

/// A JSON body the SDK hands over as a blob.
fn parse_json<T: serde::de::DeserializeOwned>(
    body: Option<&[u8]>,
    operation: &str,
) -> Result<T, DataPlaneError> {
    let body = body.unwrap_or_default();
    serde_json::from_slice(body).map_err(|err| {
        DataPlaneError::new(
            ErrorKind::Unhandled,
            format!(
                "{operation}: the response body is not the expected JSON document ({err}): {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        )
    })
}

/// `[{"k":"a"},{"k":"b"}]`: the SDK base64-encodes it into the header.
fn encode_user_properties(properties: &[UserProperty]) -> String {
    let array: Vec<Value> = properties
        .iter()
        .map(|(key, value)| {
            let mut object = serde_json::Map::with_capacity(1);
            object.insert(key.clone(), Value::String(value.clone()));
            Value::Object(object)
        })
        .collect();
    Value::Array(array).to_string()
}

/// The JSON array of one-key objects GetRetainedMessage returns, in order.
fn decode_user_properties(raw: &[u8]) -> Result<Vec<UserProperty>, DataPlaneError> {
    let parsed: Value = match serde_json::from_slice(raw) {
        Ok(value) => value,
        // Tolerate one more base64 layer, as the header carries it.
        Err(first) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .ok()
                .and_then(|decoded| serde_json::from_slice(&decoded).ok())
                .ok_or_else(|| bad_user_properties(&first.to_string()))?
        }
    };
    let items = match parsed {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(bad_user_properties("not a JSON array")),
    };
    let mut properties = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(object) = item else {
            return Err(bad_user_properties("an element is not a JSON object"));
        };
        for (key, value) in object {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            properties.push((key, value));
        }
    }
    Ok(properties)
}

fn bad_user_properties(reason: &str) -> DataPlaneError {
    DataPlaneError::new(
        ErrorKind::Unhandled,
        format!("GetRetainedMessage: cannot read userProperties: {reason}"),
    )
}

/// Turns an SDK error into a [`DataPlaneError`]; `modelled` names the kind of each
/// exception the operation declares (and `None` for an unmodelled answer).
pub(super) fn sdk_error<E>(
    err: SdkError<E>,
    modelled: fn(&E) -> Option<ErrorKind>,
) -> DataPlaneError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(context) => {
            let service = context.err();
            let status = context.raw().status().as_u16();
            // An unmodelled answer keeps its parsed code and message one level down.
            let inner_meta = std::error::Error::source(service)
                .and_then(|source| source.downcast_ref::<ErrorMetadata>());
            let text = service
                .message()
                .or_else(|| inner_meta.and_then(ErrorMetadata::message))
                .map(str::to_owned)
                .unwrap_or_else(|| error_chain(service));
            let code = service
                .code()
                .or_else(|| inner_meta.and_then(ErrorMetadata::code));
            match modelled(service) {
                Some(kind) => DataPlaneError::new(kind, text),
                None => unmodelled(status, code, &text),
            }
        }
        SdkError::ResponseError(context) => {
            let status = context.raw().status().as_u16();
            unmodelled(status, None, &error_chain(&err))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            DataPlaneError::new(ErrorKind::Transport, error_chain(&err))
        }
        // The request could not be built (a header value that is not ASCII, say).
        SdkError::ConstructionFailure(_) => {
            DataPlaneError::new(ErrorKind::InvalidRequest, error_chain(&err))
        }
        _ => DataPlaneError::new(ErrorKind::Unhandled, error_chain(&err)),
    }
}

/// An error and its sources, `: `-separated, without the Debug dump
/// `DisplayErrorContext` appends (responses, headers), so it fits in a status message.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// An answer without a modelled error type. Throttling and 5xx from a proxy or load
/// balancer stay retryable; anything else is reported with its status and a hint.
fn unmodelled(status: u16, code: Option<&str>, text: &str) -> DataPlaneError {
    // A type this crate knows, answered where the operation's model does not list it
    // (AWS's models are not exhaustive): keep the kind.
    if let Some(kind) = code.and_then(|code| {
        ErrorKind::ALL.into_iter().find(|k| {
            !matches!(k, ErrorKind::Transport | ErrorKind::Unhandled) && k.aws_type() == code
        })
    }) {
        return DataPlaneError::new(kind, text);
    }
    let code = code.map(|c| format!(" {c}")).unwrap_or_default();
    let (kind, hint) = match status {
        429 => (ErrorKind::Throttling, ""),
        500 => (ErrorKind::InternalFailure, ""),
        502..=504 => (ErrorKind::ServiceUnavailable, ""),
        401 | 403 => (
            ErrorKind::Unhandled,
            "; check that the endpoint is this account's iot:Data-ATS endpoint, that the \
             region matches it, and that the credentials are allowed the iot: actions",
        ),
        404 => (
            ErrorKind::Unhandled,
            "; check the endpoint URL: it does not serve the AWS IoT data-plane API",
        ),
        _ => (ErrorKind::Unhandled, ""),
    };
    DataPlaneError::new(
        kind,
        format!("HTTP {status}{code} with no modelled error type: {text}{hint}"),
    )
}

fn update_shadow_kind(err: &UpdateThingShadowError) -> Option<ErrorKind> {
    use UpdateThingShadowError as E;
    Some(match err {
        E::ConflictException(_) => ErrorKind::Conflict,
        E::RequestEntityTooLargeException(_) => ErrorKind::RequestEntityTooLarge,
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::UnauthorizedException(_) => ErrorKind::Unauthorized,
        E::ServiceUnavailableException(_) => ErrorKind::ServiceUnavailable,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        E::MethodNotAllowedException(_) => ErrorKind::MethodNotAllowed,
        E::UnsupportedDocumentEncodingException(_) => ErrorKind::UnsupportedDocumentEncoding,
        _ => return None,
    })
}

fn get_shadow_kind(err: &GetThingShadowError) -> Option<ErrorKind> {
    use GetThingShadowError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ResourceNotFoundException(_) => ErrorKind::ResourceNotFound,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::UnauthorizedException(_) => ErrorKind::Unauthorized,
        E::ServiceUnavailableException(_) => ErrorKind::ServiceUnavailable,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        E::MethodNotAllowedException(_) => ErrorKind::MethodNotAllowed,
        E::UnsupportedDocumentEncodingException(_) => ErrorKind::UnsupportedDocumentEncoding,
        _ => return None,
    })
}

fn delete_shadow_kind(err: &DeleteThingShadowError) -> Option<ErrorKind> {
    use DeleteThingShadowError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ResourceNotFoundException(_) => ErrorKind::ResourceNotFound,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::UnauthorizedException(_) => ErrorKind::Unauthorized,
        E::ServiceUnavailableException(_) => ErrorKind::ServiceUnavailable,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        E::MethodNotAllowedException(_) => ErrorKind::MethodNotAllowed,
        E::UnsupportedDocumentEncodingException(_) => ErrorKind::UnsupportedDocumentEncoding,
        _ => return None,
    })
}

fn list_shadows_kind(err: &ListNamedShadowsForThingError) -> Option<ErrorKind> {
    use ListNamedShadowsForThingError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ResourceNotFoundException(_) => ErrorKind::ResourceNotFound,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::UnauthorizedException(_) => ErrorKind::Unauthorized,
        E::ServiceUnavailableException(_) => ErrorKind::ServiceUnavailable,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        E::MethodNotAllowedException(_) => ErrorKind::MethodNotAllowed,
        _ => return None,
    })
}

fn publish_kind(err: &PublishError) -> Option<ErrorKind> {
    use PublishError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::UnauthorizedException(_) => ErrorKind::Unauthorized,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        E::MethodNotAllowedException(_) => ErrorKind::MethodNotAllowed,
        _ => return None,
    })
}

fn get_retained_kind(err: &GetRetainedMessageError) -> Option<ErrorKind> {
    use GetRetainedMessageError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ResourceNotFoundException(_) => ErrorKind::ResourceNotFound,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::UnauthorizedException(_) => ErrorKind::Unauthorized,
        E::ServiceUnavailableException(_) => ErrorKind::ServiceUnavailable,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        E::MethodNotAllowedException(_) => ErrorKind::MethodNotAllowed,
        _ => return None,
    })
}

fn list_retained_kind(err: &ListRetainedMessagesError) -> Option<ErrorKind> {
    use ListRetainedMessagesError as E;
    Some(match err {
        E::InvalidRequestException(_) => ErrorKind::InvalidRequest,
        E::ThrottlingException(_) => ErrorKind::Throttling,
        E::UnauthorizedException(_) => ErrorKind::Unauthorized,
        E::ServiceUnavailableException(_) => ErrorKind::ServiceUnavailable,
        E::InternalFailureException(_) => ErrorKind::InternalFailure,
        E::MethodNotAllowedException(_) => ErrorKind::MethodNotAllowed,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn loopback_endpoints_are_recognised() {
        for url in [
            "http://127.0.0.1:4566",
            "http://127.8.9.10",
            "https://localhost:8443/",
            "http://LOCALHOST",
            "http://[::1]:9000",
            "http://user@127.0.0.1:1/path",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "https://abc-ats.iot.eu-west-1.amazonaws.com",
            "http://10.0.0.1:8080",
            "http://[::2]:9000",
            "http://127.0.0.1.example.com",
            "http://localhost.example.com",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    fn endpoint_urls_need_a_scheme_and_a_host() {
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:80/").unwrap(),
            "http://127.0.0.1:80"
        );
        for bad in ["127.0.0.1:80", "ftp://x", "http://", "https:///path"] {
            assert!(
                matches!(
                    normalize_endpoint(bad),
                    Err(AwsSetupError::InvalidEndpoint { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn user_properties_keep_order_and_repeated_keys() {
        let properties = vec![
            ("k".to_owned(), "a".to_owned()),
            ("site".to_owned(), "berlin".to_owned()),
            ("k".to_owned(), "b".to_owned()),
        ];
        let encoded = encode_user_properties(&properties);
        assert_eq!(encoded, r#"[{"k":"a"},{"site":"berlin"},{"k":"b"}]"#);
        assert_eq!(
            decode_user_properties(encoded.as_bytes()).unwrap(),
            properties
        );
    }

    #[test]
    fn user_properties_decode_null_base64_and_reject_garbage() {
        assert!(decode_user_properties(b"null").unwrap().is_empty());
        // One extra base64 layer of [{"a":"1"}].
        assert_eq!(
            decode_user_properties(b"W3siYSI6IjEifV0=").unwrap(),
            vec![("a".to_owned(), "1".to_owned())]
        );
        for bad in [&b"{\"a\":\"1\"}"[..], b"[1]", b"not json"] {
            let err = decode_user_properties(bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Unhandled);
        }
    }

    /// Answers every request on a fresh port with one canned HTTP response.
    async fn canned(response: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Read the head; the test requests carry small bodies.
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        url
    }

    async fn plane(url: String) -> AwsDataPlane {
        AwsDataPlane::connect(AwsOptions {
            endpoint_url: Some(url),
            region: Some("eu-west-1".into()),
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn modelled_errors_keep_their_kind_and_message() {
        let url = canned(
            "HTTP/1.1 409 Conflict\r\nx-amzn-ErrorType: ConflictException\r\n\
             Content-Type: application/json\r\nContent-Length: 32\r\nConnection: close\r\n\r\n\
             {\"message\":\"Version conflict\"}  ",
        )
        .await;
        let err = plane(url)
            .await
            .update_thing_shadow("t", None, Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict);
        assert_eq!(err.message, "Version conflict");
    }

    #[tokio::test]
    async fn a_403_without_a_type_is_reported_with_status_and_hint() {
        let url = canned(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n\
             Content-Length: 27\r\nConnection: close\r\n\r\n{\"message\":\"Forbidden\"}    ",
        )
        .await;
        let err = plane(url)
            .await
            .get_thing_shadow("t", Some("s"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unhandled);
        assert!(err.message.contains("HTTP 403"), "{}", err.message);
        assert!(err.message.contains(": Forbidden;"), "{}", err.message);
        assert!(err.message.contains("iot:Data-ATS"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_bare_503_stays_retryable() {
        let url = canned(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\n\
             Content-Length: 5\r\nConnection: close\r\n\r\nbusy!",
        )
        .await;
        let err = plane(url)
            .await
            .list_retained_messages(None, Some(1))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::ServiceUnavailable, "{}", err.message);
        assert!(err.kind.is_retryable());
    }

    #[tokio::test]
    async fn a_closed_port_is_a_transport_error() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = plane(format!("http://127.0.0.1:{port}"))
            .await
            .get_thing_shadow("t", None)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Transport, "{}", err.message);
    }

    async fn discover_from(url: String) -> Result<String, AwsSetupError> {
        let sdk_config = aws_config::SdkConfig::builder()
            .endpoint_url(url)
            .behavior_version(BehaviorVersion::latest())
            .build();
        let credentials =
            SharedCredentialsProvider::new(Credentials::new("a", "b", None, None, "test"));
        discover_endpoint(&sdk_config, &Region::from_static("eu-west-1"), &credentials).await
    }

    #[tokio::test]
    async fn the_data_ats_endpoint_is_discovered() {
        let url = canned(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 57\r\n\
             Connection: close\r\n\r\n{\"endpointAddress\":\"abc-ats.iot.eu-west-1.amazonaws.com\"}",
        )
        .await;
        assert_eq!(
            discover_from(url).await.unwrap(),
            "https://abc-ats.iot.eu-west-1.amazonaws.com"
        );
    }

    #[tokio::test]
    async fn a_refused_discovery_says_what_to_do() {
        let url = canned(
            "HTTP/1.1 403 Forbidden\r\nx-amzn-ErrorType: AccessDeniedException\r\n\
             Content-Type: application/json\r\nContent-Length: 25\r\nConnection: close\r\n\r\n\
             {\"message\":\"not today\"}  ",
        )
        .await;
        let err = discover_from(url).await.unwrap_err().to_string();
        assert!(err.contains("not today"), "{err}");
        assert!(err.contains("--endpoint-url"), "{err}");
    }

    #[tokio::test]
    async fn a_non_json_shadow_body_is_unhandled() {
        let url = canned(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Content-Length: 8\r\nConnection: close\r\n\r\nnot json",
        )
        .await;
        let err = plane(url)
            .await
            .get_thing_shadow("t", None)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unhandled);
        assert!(err.message.contains("GetThingShadow"), "{}", err.message);
    }
}

#[cfg(test)]
mod setup_tests {
    use super::*;

    /// Whether this machine has any AWS configuration that the default chain could find.
    fn aws_configured() -> bool {
        let env = [
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
        ];
        env.iter().any(|v| std::env::var_os(v).is_some())
            || std::env::var_os("HOME")
                .is_some_and(|home| std::path::Path::new(&home).join(".aws").exists())
    }

    #[tokio::test]
    async fn a_remote_endpoint_needs_a_region_and_credentials() {
        if aws_configured() {
            eprintln!("SKIP: this machine has AWS configuration; the test needs none");
            return;
        }
        let err = AwsDataPlane::connect(AwsOptions {
            endpoint_url: Some("https://example-ats.iot.eu-west-1.amazonaws.com".into()),
            region: None,
        })
        .await
        .unwrap_err();
        assert!(matches!(err, AwsSetupError::MissingRegion), "{err}");
        assert!(err.to_string().contains("AWS_REGION"), "{err}");

        let err = AwsDataPlane::connect(AwsOptions {
            endpoint_url: Some("https://example-ats.iot.eu-west-1.amazonaws.com".into()),
            region: Some("eu-west-1".into()),
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, AwsSetupError::MissingCredentials { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
        eprintln!("{err}");
    }

    #[tokio::test]
    async fn a_loopback_endpoint_needs_no_aws_setup() {
        if aws_configured() {
            eprintln!("SKIP: this machine has AWS configuration; the test needs none");
            return;
        }
        let plane = AwsDataPlane::connect(AwsOptions {
            endpoint_url: Some("http://localhost:1/".into()),
            region: None,
        })
        .await
        .unwrap();
        assert_eq!(plane.endpoint(), "http://localhost:1");
    }
}
