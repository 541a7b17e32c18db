use super::covers;

#[test]
fn writes_at_or_under_the_poll_path_are_covered() {
    assert!(covers("/api/jobs", "/api/jobs"));
    assert!(covers("/api/jobs", "/api/jobs/7"));
    assert!(covers("/api/jobs/", "/api/jobs/7/cancel"));
    assert!(!covers("/api/jobs", "/api/jobsx"));
    assert!(!covers("/api/jobs", "/api"));
    assert!(!covers("/api/jobs", "/other/api/jobs"));
}

#[test]
fn writes_compare_in_normal_form() {
    use crate::route::normalize;
    let c = |poll: &str, write: &str| covers(&normalize(poll), &normalize(write));
    // The write resolves outside the feed's path: no refresh.
    assert!(!c("/api/jobs", "/api/jobs/%2e%2e/track"));
    assert!(!c("/api/jobs", "/api/jobs/%2E./x"));
    assert!(!c(
        "/api/projects/1/jobs",
        "/api/projects/1/jobs/../../2/jobs"
    ));
    // ...and reaches the path it resolves to.
    assert!(c("/api/track", "/api/jobs/%2e%2e/track"));
    assert!(c(
        "/api/projects/2/jobs",
        "/api/projects/1/jobs/../../2/jobs/9"
    ));
    // Encoded unreserved characters are the same path.
    assert!(c("/api/jobs", "/api/%6Aobs/7"));
    assert!(c("/api/~x", "/api/%7ex"));
    // An encoded slash stays a byte of one segment, not a separator.
    assert!(!c("/api/jobs", "/api/jobs%2F7"));
}
