//! What `task import` makes of a file before and after the hub sees it:
//! the tasks of a JSON array or of JSON lines, each with its place in the
//! file (`line 7`, `index 3`) so an error names it; the batches they are
//! posted in (at most [`MAX_BATCH_TASKS`] tasks and
//! [`MAX_BATCH_BODY_BYTES`] a batch); and a hub's refusal of a batch
//! (`tasks[17]…`) told as the place of that task in the file. Pure: text
//! in, values out. It must never call the hub, read a file, or check a
//! task's fields (the hub does: it says which task and why).

use agentcom_protocol::{NewTask, MAX_BATCH_BODY_BYTES, MAX_BATCH_TASKS};

/// One task of the file, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    /// `line 7` (JSON lines) or `index 3` (a JSON array).
    pub place: String,
    pub task: NewTask,
    /// Its JSON as it is posted, for sizing the batches.
    pub bytes: usize,
}

/// The tasks of `text`: a JSON array of task bodies (when its first
/// character that is not white space is `[`), or one task body a line
/// (blank lines skipped). The first that is not a task body is an error
/// naming its place.
pub(crate) fn parse(text: &str) -> Result<Vec<Item>, String> {
    let item = |place: String, task: NewTask| {
        let bytes = serde_json::to_vec(&task).map_or(0, |v| v.len());
        Item { place, task, bytes }
    };
    if text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| format!("the file's JSON array does not parse: {e}"))?;
        return values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let place = format!("index {i}");
                serde_json::from_value::<NewTask>(v)
                    .map(|t| item(place.clone(), t))
                    .map_err(|e| format!("{place}: not a task body: {e}"))
            })
            .collect();
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            let place = format!("line {}", n + 1);
            serde_json::from_str::<NewTask>(l)
                .map(|t| item(place.clone(), t))
                .map_err(|e| format!("{place}: not a task body: {}", in_line(&e)))
        })
        .collect()
}

/// A parse error of one line, its place said as the column only (the
/// line is the file's, said before it).
fn in_line(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let at = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&at) {
        Some(what) => format!("{what} (column {})", e.column()),
        None => text,
    }
}

/// `items` cut into batches of at most `size` tasks (at most
/// [`MAX_BATCH_TASKS`]) whose bodies stay within
/// [`MAX_BATCH_BODY_BYTES`], in order: the ranges of `items` to post.
pub(crate) fn batches(items: &[Item], size: usize) -> Vec<std::ops::Range<usize>> {
    let size = size.clamp(1, MAX_BATCH_TASKS);
    // `{"tasks":[…]}` and a comma a task.
    let room = MAX_BATCH_BODY_BYTES - 16;
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, it) in items.iter().enumerate() {
        let full = i - start == size || (i > start && bytes + it.bytes + 1 > room);
        if full {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += it.bytes + 1;
    }
    if start < items.len() {
        out.push(start..items.len());
    }
    out
}

/// The hub's refusal of the batch `batch` (an index into `items`), with
/// its first `tasks[N]` told as that task's place in the file.
pub(crate) fn locate(error: &str, items: &[Item], batch: &std::ops::Range<usize>) -> String {
    let Some(at) = error.find("tasks[") else {
        return error.to_string();
    };
    let rest = &error[at + "tasks[".len()..];
    let Some(close) = rest.find(']') else {
        return error.to_string();
    };
    let Some(item) = rest[..close]
        .parse::<usize>()
        .ok()
        .filter(|n| *n < batch.len())
        .and_then(|n| items.get(batch.start + n))
    else {
        return error.to_string();
    };
    let after = &rest[close + 1..];
    let after = after.strip_prefix('.').unwrap_or(after);
    let sep = if after.starts_with(':') { "" } else { ": " };
    format!("{}{}{sep}{after}", &error[..at], item.place)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_and_arrays_give_tasks_with_their_places() {
        let lines = "{\"title\":\"a\"}\n\n  \n{\"title\":\"b\",\"priority\":\"low\"}\n";
        let items = parse(lines).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].place, "line 1");
        assert_eq!(items[1].place, "line 4");
        assert_eq!(items[1].task.title, "b");
        assert_eq!(items[0].bytes, r#"{"title":"a"}"#.len());
        let array = " [ {\"title\":\"a\"},\n {\"title\":\"b\"} ]";
        let items = parse(array).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].place, "index 1");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn a_line_that_is_not_a_task_body_is_named() {
        let err = parse("{\"title\":\"a\"}\n{\"title\":\"b\",\"needs\":[]}\n").unwrap_err();
        assert!(
            err.starts_with("line 2: not a task body: unknown field `needs`"),
            "{err}"
        );
        let err = parse("{\"title\":\"a\"}\n{\"title\":\n").unwrap_err();
        assert_eq!(
            err,
            "line 2: not a task body: EOF while parsing a value (column 9)"
        );
        let err = parse("[{\"title\":\"a\"}, {\"description\":\"no title\"}]").unwrap_err();
        assert!(err.starts_with("index 1: not a task body"), "{err}");
        let err = parse("[{\"title\":\"a\"},").unwrap_err();
        assert!(err.contains("array does not parse"), "{err}");
    }

    fn items(n: usize, bytes: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                place: format!("line {}", i + 1),
                task: NewTask::default(),
                bytes,
            })
            .collect()
    }

    #[test]
    fn batches_hold_at_most_their_size_and_the_body_limit() {
        assert_eq!(batches(&items(5, 10), 2), vec![0..2, 2..4, 4..5]);
        assert_eq!(
            batches(&items(2_500, 10), 5_000),
            vec![0..1000, 1000..2000, 2000..2500]
        );
        assert!(batches(&items(0, 10), 1000).is_empty());
        // Tasks of a third of the body limit: two a batch.
        let big = MAX_BATCH_BODY_BYTES / 3;
        assert_eq!(batches(&items(5, big), 1000), vec![0..2, 2..4, 4..5]);
        // One task over the limit goes alone (the hub says 413).
        assert_eq!(
            batches(&items(2, MAX_BATCH_BODY_BYTES + 1), 1000),
            vec![0..1, 1..2]
        );
    }

    #[test]
    fn a_refusal_names_the_place_in_the_file() {
        let all = items(30, 10);
        let second = 10..20;
        assert_eq!(
            locate(
                "invalid (422): tasks[3].title: must be 1 to 200 characters",
                &all,
                &second
            ),
            "invalid (422): line 14: title: must be 1 to 200 characters"
        );
        assert_eq!(
            locate(
                "conflict (409): tasks[0]: idempotency key \"k\" was used",
                &all,
                &second
            ),
            "conflict (409): line 11: idempotency key \"k\" was used"
        );
        // Not an index of this batch, or no index: as it is.
        for plain in [
            "conflict (409): tasks[10]: x",
            "too_large (413): the body is larger than 67108864 bytes",
            "tasks[x]: y",
        ] {
            assert_eq!(locate(plain, &all, &second), plain);
        }
    }
}
