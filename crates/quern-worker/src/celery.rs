//! Celery task messages taken as Quern jobs, so a web tier that calls `ingest_document.delay(...)` needs no change:
//! which task names this worker takes (`--celery-task`), how each task's arguments fill the job's fields, and the
//! translation of one message (protocol 2 or 1, JSON serializer) into a [`Job`], or the exact reason it cannot
//! be one. No broker types here: the consumer reads the headers, the pipeline calls [`CeleryTasks::translate`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use quern_core::Job;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The content type of Celery's JSON serializer (its default since 4.0); the only one Quern reads.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Namespace of the job ids made from Celery task ids that are not UUIDs (a `task_id=` the caller chose):
/// the same task id always makes the same job id, so its redeliveries still meet Quern's idempotency.
const CELERY_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a1e_84d5_4f0b_9c53_71a0_c7e4_b2d9);

/// A job field a task argument can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobField {
    /// `collection`
    Collection,
    /// `document_id`
    DocumentId,
    /// `text`
    Text,
    /// `metadata`
    Metadata,
    /// `op` (`upsert` or `delete`)
    Op,
}

impl JobField {
    const ALL: [JobField; 5] =
        [JobField::Collection, JobField::DocumentId, JobField::Text, JobField::Metadata, JobField::Op];
    const NAMES: &'static str = "collection, document_id, text, metadata, op";

    /// The field's name in the job contract.
    pub fn name(self) -> &'static str {
        match self {
            JobField::Collection => "collection",
            JobField::DocumentId => "document_id",
            JobField::Text => "text",
            JobField::Metadata => "metadata",
            JobField::Op => "op",
        }
    }

    fn from_name(name: &str) -> Option<JobField> {
        JobField::ALL.into_iter().find(|field| field.name() == name)
    }
}

/// How a task's arguments become a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskArguments {
    /// Positional argument `i` fills field `i`; keyword arguments fill fields by name.
    Fields(Vec<JobField>),
    /// The first positional argument (or the keyword argument `job`) is an object with the contract's fields.
    Job,
}

/// One `--celery-task` value: `TASK=FIELD,FIELD,...` or `TASK=job`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMapping {
    /// The task's registered name, as in the message's `task` header (`app.tasks.ingest_document`).
    pub task: String,
    /// How its arguments fill the job.
    pub arguments: TaskArguments,
}

impl FromStr for TaskMapping {
    type Err = String;

    fn from_str(value: &str) -> Result<TaskMapping, String> {
        let usage = "TASK=FIELD,FIELD,... (e.g. app.tasks.ingest_document=document_id,text,collection) or TASK=job";
        let (task, spec) = value.split_once('=').ok_or_else(|| format!("`{value}` is not {usage}"))?;
        let task = task.trim();
        if task.is_empty() {
            return Err(format!("`{value}` names no task: expected {usage}"));
        }
        let spec = spec.trim();
        let arguments = if spec == "job" {
            TaskArguments::Job
        } else {
            let mut fields = Vec::new();
            for name in spec.split(',').map(str::trim) {
                let field = JobField::from_name(name).ok_or_else(|| {
                    format!("`{name}` in `{value}` is not a job field ({}), nor `job` alone", JobField::NAMES)
                })?;
                if fields.contains(&field) {
                    return Err(format!("`{value}` maps `{name}` twice"));
                }
                fields.push(field);
            }
            TaskArguments::Fields(fields)
        };
        Ok(TaskMapping { task: task.to_owned(), arguments })
    }
}

impl fmt::Display for TaskMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.arguments {
            TaskArguments::Job => write!(f, "{}=job", self.task),
            TaskArguments::Fields(fields) => {
                let names: Vec<&str> = fields.iter().map(|field| field.name()).collect();
                write!(f, "{}={}", self.task, names.join(","))
            }
        }
    }
}

/// What the consumer reads off a Celery message: its properties and, for protocol 2, its headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CeleryMessage {
    /// The `task` header (protocol 2); protocol 1 carries it in the body.
    pub task: Option<String>,
    /// The `id` header: the task id.
    pub id: Option<String>,
    /// The `expires` header: an ISO 8601 time after which Celery would revoke the task.
    pub expires: Option<String>,
    /// The `compression` header, set when the body is compressed.
    pub compression: Option<String>,
    /// The message's content type: the serializer.
    pub content_type: Option<String>,
}

impl CeleryMessage {
    /// Whether these are the properties of a Celery protocol-2 message (it names its task in a header).
    pub fn is_protocol_2(&self) -> bool {
        self.task.is_some()
    }
}

/// A message that cannot be a job, and why: it goes to the dead-letter queue with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The job id the task would have had, so its fate is recorded under it.
    pub job_id: Option<Uuid>,
    /// A short reason (the dead letter's `quern-reason` and a metric label).
    pub reason: &'static str,
    /// What exactly is wrong, naming the task and what to change.
    pub detail: String,
}

/// The tasks this worker takes, and the collection of those whose arguments name none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CeleryTasks {
    mappings: Vec<TaskMapping>,
    collection: Option<String>,
}

impl CeleryTasks {
    /// The tasks of `mappings`, with `collection` for tasks that give none. Fails when a task is named twice.
    pub fn new(mappings: Vec<TaskMapping>, collection: Option<String>) -> Result<CeleryTasks, String> {
        for (i, mapping) in mappings.iter().enumerate() {
            if mappings[..i].iter().any(|earlier| earlier.task == mapping.task) {
                return Err(format!("--celery-task names `{}` twice", mapping.task));
            }
        }
        Ok(CeleryTasks { mappings, collection: collection.filter(|c| !c.trim().is_empty()) })
    }

    /// Whether no task is mapped (the worker takes no Celery messages).
    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }

    /// The job a Celery message asks for, or why it cannot be one. `message` holds the protocol-2 headers (or
    /// none, for protocol 1, whose body carries them); `now` decides whether it has expired.
    pub fn translate(&self, message: &CeleryMessage, body: &[u8], now: DateTime<Utc>) -> Result<Job, Refused> {
        let task = Task::read(message, body)?;
        let job_id = task.job_id();
        let refuse = |reason: &'static str, detail: String| Refused { job_id, reason, detail };
        let Some(mapping) = self.mappings.iter().find(|m| m.task == task.name) else {
            let taken: Vec<&str> = self.mappings.iter().map(|m| m.task.as_str()).collect();
            let taken =
                if taken.is_empty() { "none: start it with --celery-task".to_owned() } else { taken.join(", ") };
            return Err(refuse(
                "celery-task",
                format!("{}: not a task this worker takes (it takes {taken})", task.named()),
            ));
        };
        if let Some(expires) = &task.expires {
            match DateTime::parse_from_rfc3339(expires) {
                Ok(at) if at < now => {
                    return Err(refuse("celery-expired", format!("{} expired at {expires}", task.named())));
                }
                Ok(_) => {}
                Err(error) => {
                    return Err(refuse("celery-message", format!("{}: `expires` `{expires}`: {error}", task.named())))
                }
            }
        }
        let mut fields = self.fill(mapping, &task).map_err(|detail| refuse("celery-arguments", detail))?;
        if !fields.contains_key("collection") {
            match &self.collection {
                Some(collection) => {
                    fields.insert("collection".into(), Value::String(collection.clone()));
                }
                None => {
                    let detail =
                        format!("{} gives no collection, and the worker has no --celery-collection", task.named());
                    return Err(refuse("celery-arguments", detail));
                }
            }
        }
        // The job object may carry its own contract `job_id`; otherwise the task's id is the job's.
        if let Some(job_id) = job_id {
            fields.entry("job_id").or_insert_with(|| Value::String(job_id.hyphenated().to_string()));
        }
        Job::from_json(Value::Object(fields)).map_err(|error| Refused {
            job_id,
            reason: "contract",
            detail: format!("{}: {error}", task.named()),
        })
    }

    /// The job's fields from the task's arguments, or what does not map.
    fn fill(&self, mapping: &TaskMapping, task: &Task) -> Result<Map<String, Value>, String> {
        let named = task.named();
        let mut fields = Map::new();
        let put = |fields: &mut Map<String, Value>, name: &str, value: &Value| -> Result<(), String> {
            if fields.insert(name.to_owned(), normalise(name, value)).is_some() {
                return Err(format!("{named}: `{name}` is given twice (by position and by keyword)"));
            }
            Ok(())
        };
        match &mapping.arguments {
            TaskArguments::Fields(order) => {
                if task.args.len() > order.len() {
                    let names: Vec<&str> = order.iter().map(|f| f.name()).collect();
                    return Err(format!(
                        "{named} has {} positional arguments; --celery-task '{mapping}' maps {} ({})",
                        task.args.len(),
                        order.len(),
                        names.join(", ")
                    ));
                }
                for (field, value) in order.iter().zip(&task.args) {
                    put(&mut fields, field.name(), value)?;
                }
            }
            TaskArguments::Job => {
                let object = match (task.args.as_slice(), task.kwargs.get("job")) {
                    ([object], None) | ([], Some(object)) => object,
                    ([], None) => {
                        return Err(format!("{named} has no job object (first positional argument or `job=`)"))
                    }
                    _ => {
                        return Err(format!(
                            "{named} has {} positional arguments and{} a `job` keyword; --celery-task '{mapping}' \
                             takes one job object",
                            task.args.len(),
                            if task.kwargs.contains_key("job") { "" } else { " no" }
                        ))
                    }
                };
                let Value::Object(object) = object else {
                    return Err(format!("{named}: the job argument is {}, not an object", kind(object)));
                };
                for (name, value) in object {
                    fields.insert(name.clone(), normalise(name, value));
                }
            }
        }
        for (name, value) in &task.kwargs {
            if name == "job" && mapping.arguments == TaskArguments::Job {
                continue;
            }
            if JobField::from_name(name).is_none() {
                return Err(format!("{named}: keyword argument `{name}` maps to no job field ({})", JobField::NAMES));
            }
            put(&mut fields, name, value)?;
        }
        Ok(fields)
    }
}

/// A Django primary key is a number; the contract's ids are strings.
fn normalise(name: &str, value: &Value) -> Value {
    match value {
        Value::Number(n) if matches!(name, "document_id" | "collection") && (n.is_i64() || n.is_u64()) => {
            Value::String(n.to_string())
        }
        other => other.clone(),
    }
}

/// A JSON value's kind, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A Celery task as read from one message, either protocol.
struct Task {
    name: String,
    id: Option<String>,
    expires: Option<String>,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
}

impl Task {
    /// Reads the task of a protocol-2 message (headers, and a body `[args, kwargs, embed]`) or of a protocol-1
    /// one (a body `{"task", "id", "args", "kwargs", ...}`).
    fn read(message: &CeleryMessage, body: &[u8]) -> Result<Task, Refused> {
        let header_id = message.id.as_deref().and_then(task_job_id);
        let label = match &message.task {
            Some(task) => format!("Celery task `{task}`"),
            None => "Celery message".to_owned(),
        };
        let refuse = |reason: &'static str, detail: String| Refused { job_id: header_id, reason, detail };
        if let Some(compression) = &message.compression {
            return Err(refuse(
                "celery-serializer",
                format!("{label} is compressed ({compression}); Quern reads uncompressed JSON: unset task_compression"),
            ));
        }
        let content_type = message.content_type.as_deref().unwrap_or("(none)");
        if !content_type.eq_ignore_ascii_case(JSON_CONTENT_TYPE) {
            return Err(refuse(
                "celery-serializer",
                format!(
                    "{label} was sent with content type {content_type}; Quern reads Celery's JSON serializer only: \
                     set task_serializer = 'json' (Celery's default)"
                ),
            ));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| refuse("celery-message", format!("{label}: the body is not JSON: {error}")))?;
        match (&message.task, value) {
            (Some(name), Value::Array(parts)) => {
                let mut parts = parts.into_iter();
                let args = match parts.next() {
                    Some(Value::Array(args)) => args,
                    other => return Err(refuse("celery-message", malformed(&label, "args", other.as_ref()))),
                };
                let kwargs = match parts.next() {
                    Some(Value::Object(kwargs)) => kwargs,
                    None | Some(Value::Null) => Map::new(),
                    other => return Err(refuse("celery-message", malformed(&label, "kwargs", other.as_ref()))),
                };
                Ok(Task { name: name.clone(), id: message.id.clone(), expires: message.expires.clone(), args, kwargs })
            }
            (Some(_), other) => Err(refuse(
                "celery-message",
                format!("{label}: a protocol 2 body is [args, kwargs, embed], not {}", kind(&other)),
            )),
            (None, Value::Object(mut body)) => {
                let text = |body: &mut Map<String, Value>, key: &str| match body.remove(key) {
                    Some(Value::String(s)) => Some(s),
                    _ => None,
                };
                let name = text(&mut body, "task")
                    .ok_or_else(|| refuse("celery-message", "a Celery protocol 1 body without `task`".into()))?;
                let label = format!("Celery task `{name}`");
                let id = text(&mut body, "id");
                let job_id = id.as_deref().and_then(task_job_id);
                let refuse = |detail: String| Refused { job_id, reason: "celery-message", detail };
                let args = match body.remove("args") {
                    Some(Value::Array(args)) => args,
                    None | Some(Value::Null) => Vec::new(),
                    other => return Err(refuse(malformed(&label, "args", other.as_ref()))),
                };
                let kwargs = match body.remove("kwargs") {
                    Some(Value::Object(kwargs)) => kwargs,
                    None | Some(Value::Null) => Map::new(),
                    other => return Err(refuse(malformed(&label, "kwargs", other.as_ref()))),
                };
                Ok(Task { name, id, expires: text(&mut body, "expires"), args, kwargs })
            }
            (None, other) => {
                Err(refuse("celery-message", format!("a Celery protocol 1 body is an object, not {}", kind(&other))))
            }
        }
    }

    /// The job id: the task id itself when it is a UUID (Celery's default), else one derived from it.
    fn job_id(&self) -> Option<Uuid> {
        self.id.as_deref().and_then(task_job_id)
    }

    /// How messages name the task: its name and id.
    fn named(&self) -> String {
        match &self.id {
            Some(id) => format!("Celery task `{}` (id {id})", self.name),
            None => format!("Celery task `{}`", self.name),
        }
    }
}

/// The job id of a task id: the UUID itself, or a UUIDv5 of the text for an id that is not one.
fn task_job_id(id: &str) -> Option<Uuid> {
    let id = id.trim();
    if id.is_empty() {
        return None;
    }
    Some(match Uuid::try_parse(id) {
        Ok(uuid) if id.len() == 36 => uuid,
        _ => Uuid::new_v5(&CELERY_ID_NAMESPACE, id.as_bytes()),
    })
}

fn malformed(label: &str, part: &str, found: Option<&Value>) -> String {
    let found = found.map(kind).unwrap_or("missing");
    let wanted = if part == "args" { "an array" } else { "an object" };
    format!("{label}: `{part}` is {found}, not {wanted}")
}

/// Reads a protocol-1 Celery body's task name, if the body is one (a JSON object with a string `task` and no
/// `job_id`), for a message that is not a Quern job.
pub fn protocol_1_task(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        task: Option<String>,
        job_id: Option<serde::de::IgnoredAny>,
    }
    let peek: Peek = serde_json::from_slice(body).ok()?;
    peek.job_id.is_none().then_some(peek.task).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "b180ba95-8363-4675-919e-0c9d4e1dac5f";

    fn tasks(mappings: &[&str], collection: Option<&str>) -> CeleryTasks {
        let mappings = mappings.iter().map(|m| m.parse().expect("a valid mapping")).collect();
        CeleryTasks::new(mappings, collection.map(str::to_owned)).expect("valid tasks")
    }

    fn v2(task: &str) -> CeleryMessage {
        CeleryMessage {
            task: Some(task.into()),
            id: Some(ID.into()),
            content_type: Some(JSON_CONTENT_TYPE.into()),
            ..CeleryMessage::default()
        }
    }

    fn translate(tasks: &CeleryTasks, message: &CeleryMessage, body: &str) -> Result<Job, Refused> {
        tasks.translate(message, body.as_bytes(), Utc::now())
    }

    #[test]
    fn mappings_parse_and_print_back() {
        let mapping: TaskMapping = "app.tasks.ingest_document=document_id, text,collection".parse().unwrap();
        assert_eq!(
            mapping.arguments,
            TaskArguments::Fields(vec![JobField::DocumentId, JobField::Text, JobField::Collection])
        );
        assert_eq!(mapping.to_string(), "app.tasks.ingest_document=document_id,text,collection");
        assert_eq!("ingest=job".parse::<TaskMapping>().unwrap().arguments, TaskArguments::Job);
        for (bad, says) in [
            ("ingest", "is not TASK=FIELD"),
            ("=text", "names no task"),
            ("t=document_id,body", "`body` in `t=document_id,body` is not a job field"),
            ("t=text,text", "maps `text` twice"),
            ("t=", "`` in `t=` is not a job field"),
        ] {
            let error = bad.parse::<TaskMapping>().expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
        let twice = vec!["t=job".parse().unwrap(), "t=text".parse().unwrap()];
        assert!(CeleryTasks::new(twice, None).unwrap_err().contains("`t` twice"));
    }

    #[test]
    fn protocol_2_positional_and_keyword_arguments_fill_the_job() {
        let tasks = tasks(&["app.tasks.ingest_document=document_id,text,collection"], None);
        let body = r#"[[42, "hello"], {"collection": "docs", "metadata": {"lang": "en"}}, {"callbacks": null}]"#;
        let job = translate(&tasks, &v2("app.tasks.ingest_document"), body).expect("maps");
        assert_eq!(job.job_id.to_string(), ID, "Celery's id is the job id");
        assert_eq!((job.collection.as_str(), job.document_id.as_str(), job.text.as_str()), ("docs", "42", "hello"));
        assert_eq!(job.metadata.unwrap()["lang"], "en");
        assert_eq!(job.op, quern_core::JobOp::Upsert);
    }

    #[test]
    fn a_fixed_collection_serves_tasks_that_name_none_and_deletes_need_no_text() {
        let tasks = tasks(&["ingest=document_id,text", "forget=document_id,op"], Some("docs"));
        let job = translate(&tasks, &v2("ingest"), r#"[["d1", "t"], {}, {}]"#).unwrap();
        assert_eq!(job.collection, "docs");
        let job = translate(&tasks, &v2("ingest"), r#"[["d1", "t"], {"collection": "mine"}, {}]"#).unwrap();
        assert_eq!(job.collection, "mine", "the task's own collection wins");
        let job = translate(&tasks, &v2("forget"), r#"[["d1", "delete"], {}, {}]"#).unwrap();
        assert_eq!(job.op, quern_core::JobOp::Delete);
        let none = self::tasks(&["ingest=document_id,text"], None);
        let refused = translate(&none, &v2("ingest"), r#"[["d1", "t"], {}, {}]"#).unwrap_err();
        assert_eq!(refused.reason, "celery-arguments");
        assert!(refused.detail.contains("no --celery-collection"), "{}", refused.detail);
    }

    #[test]
    fn a_job_object_maps_whole_from_the_first_argument_or_the_job_keyword() {
        let tasks = tasks(&["ingest=job"], None);
        let object = r#"{"collection": "c", "document_id": "d", "text": "t", "future": 1}"#;
        let job = translate(&tasks, &v2("ingest"), &format!("[[{object}], {{}}, {{}}]")).unwrap();
        assert_eq!((job.collection.as_str(), job.job_id.to_string().as_str()), ("c", ID));
        let job = translate(&tasks, &v2("ingest"), &format!(r#"[[], {{"job": {object}}}, {{}}]"#)).unwrap();
        assert_eq!(job.document_id, "d");
        let own = "0190a5c2-7a3e-7cc1-9f3b-2d1f0e6b8a11";
        let with_id =
            format!(r#"[[{{"job_id": "{own}", "collection": "c", "document_id": "d", "text": "t"}}], {{}}, {{}}]"#);
        assert_eq!(translate(&tasks, &v2("ingest"), &with_id).unwrap().job_id.to_string(), own);
        for (body, says) in [
            (r#"[["not an object"], {}, {}]"#, "is a string, not an object"),
            (r#"[[{}, {}], {}, {}]"#, "2 positional arguments"),
            (r#"[[], {}, {}]"#, "has no job object"),
        ] {
            let refused = translate(&tasks, &v2("ingest"), body).unwrap_err();
            assert!(refused.detail.contains(says), "{body}: {}", refused.detail);
        }
    }

    #[test]
    fn arguments_that_do_not_map_are_refused_naming_them() {
        let tasks = tasks(&["ingest=document_id,text,collection"], None);
        for (body, reason, says) in [
            (r#"[["d", "t", "c", "extra"], {}, {}]"#, "celery-arguments", "has 4 positional arguments"),
            (
                r#"[["d", "t", "c"], {"user_id": 5}, {}]"#,
                "celery-arguments",
                "keyword argument `user_id` maps to no job field",
            ),
            (r#"[["d", "t", "c"], {"text": "again"}, {}]"#, "celery-arguments", "`text` is given twice"),
            (r#"[["d", 5, "c"], {}, {}]"#, "contract", "field `text`"),
            (r#"[["", "t", "c"], {}, {}]"#, "contract", "field `document_id`: must not be empty"),
            (r#"[["d"], {"collection": "c"}, {}]"#, "contract", "`text`"),
            (r#"{"args": []}"#, "celery-message", "not an object"),
            (r#"[{"d": 1}, {}, {}]"#, "celery-message", "`args` is an object, not an array"),
            ("not json", "celery-message", "not JSON"),
        ] {
            let refused = translate(&tasks, &v2("ingest"), body).unwrap_err();
            assert_eq!(refused.reason, reason, "{body}: {}", refused.detail);
            assert!(refused.detail.contains(says), "{body}: {}", refused.detail);
            assert!(refused.detail.contains("`ingest`") || reason == "celery-message", "{}", refused.detail);
            assert_eq!(refused.job_id.map(|id| id.to_string()).as_deref(), Some(ID), "recorded under the task's id");
        }
    }

    #[test]
    fn other_tasks_serializers_and_expired_tasks_are_refused_with_what_to_change() {
        let tasks = tasks(&["ingest=document_id,text,collection"], None);
        let body = r#"[["d", "t", "c"], {}, {}]"#;
        let refused = translate(&tasks, &v2("app.tasks.send_email"), body).unwrap_err();
        assert_eq!(refused.reason, "celery-task");
        assert!(refused.detail.contains("`app.tasks.send_email`") && refused.detail.contains("takes ingest"));
        let pickle = CeleryMessage { content_type: Some("application/x-python-serialize".into()), ..v2("ingest") };
        let refused = translate(&tasks, &pickle, body).unwrap_err();
        assert_eq!(refused.reason, "celery-serializer");
        assert!(refused.detail.contains("task_serializer = 'json'"), "{}", refused.detail);
        let zipped = CeleryMessage { compression: Some("application/x-gzip".into()), ..v2("ingest") };
        assert_eq!(translate(&tasks, &zipped, body).unwrap_err().reason, "celery-serializer");
        let expired = CeleryMessage { expires: Some("2020-01-01T00:00:00.000000+00:00".into()), ..v2("ingest") };
        assert_eq!(translate(&tasks, &expired, body).unwrap_err().reason, "celery-expired");
        let later = CeleryMessage { expires: Some("2999-01-01T00:00:00+00:00".into()), ..v2("ingest") };
        assert!(translate(&tasks, &later, body).is_ok());
        let none = CeleryTasks::default();
        assert!(translate(&none, &v2("ingest"), body).unwrap_err().detail.contains("start it with --celery-task"));
    }

    #[test]
    fn protocol_1_bodies_carry_task_id_and_arguments() {
        let tasks = tasks(&["ingest=document_id,text,collection"], None);
        let body = format!(
            r#"{{"task": "ingest", "id": "{ID}", "args": ["d", "t"], "kwargs": {{"collection": "c"}}, "retries": 0}}"#
        );
        assert_eq!(protocol_1_task(body.as_bytes()).as_deref(), Some("ingest"));
        let message = CeleryMessage { content_type: Some(JSON_CONTENT_TYPE.into()), ..CeleryMessage::default() };
        let job = translate(&tasks, &message, &body).unwrap();
        assert_eq!((job.job_id.to_string().as_str(), job.collection.as_str()), (ID, "c"));
        assert_eq!(protocol_1_task(br#"{"job_id": "x", "task": "t"}"#), None, "a Quern job is not a Celery body");
        assert_eq!(protocol_1_task(b"[1]"), None);
    }

    #[test]
    fn task_ids_that_are_not_uuids_make_the_same_job_id_every_time() {
        let tasks = tasks(&["ingest=document_id,text,collection"], None);
        let body = r#"[["d", "t", "c"], {}, {}]"#;
        let custom = CeleryMessage { id: Some("import-2026-12-01-d".into()), ..v2("ingest") };
        let first = translate(&tasks, &custom, body).unwrap().job_id;
        assert_eq!(first, translate(&tasks, &custom, body).unwrap().job_id);
        let other = CeleryMessage { id: Some("import-2026-12-01-e".into()), ..v2("ingest") };
        assert_ne!(first, translate(&tasks, &other, body).unwrap().job_id);
    }
}
