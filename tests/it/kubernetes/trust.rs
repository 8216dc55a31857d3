//! Issue 21: the action never reports a success that is not true, and
//! never takes traffic from what it did not deploy. Each test puts the
//! cluster in a situation the other tests do not choose and, where kubectl
//! has a verdict on it, checks kubectl's beside the action's.

use crate::support::action::Action;

/// A services file that is a list at the top level: one problem, naming
/// the shape expected, and no second, misleading one.
#[test]
fn kubernetes_a_services_file_that_is_a_list_names_the_shape_once() {
    let list = "- name: web\n  service: shop\n- name: api\n";
    for (target, strategy) in
        [("kubernetes", "blue-green"), ("kubernetes", "rolling"), ("hosts", "blue-green")]
    {
        let a = Action::new()
            .input("target", target)
            .input("strategy", strategy)
            .input("image", "example.invalid/web:v2")
            .input("services-file", "services.yml")
            .input("github-deployments", "false");
        std::fs::write(a.path("services.yml"), list).unwrap();
        let run = a.run();
        assert_eq!(run.code, Some(2), "{}", run.stdout);
        let problems: Vec<&str> =
            run.stdout.lines().filter(|l| l.contains("input 'services-file'")).collect();
        assert_eq!(problems.len(), 1, "{target}/{strategy}: {problems:#?}\n{}", run.stdout);
        assert!(problems[0].contains("is a list at the top level"), "{}", problems[0]);
        assert!(problems[0].contains("'services'"), "{}", problems[0]);
        assert!(!run.stdout.contains("FileRoot"), "{}", run.stdout);
        assert!(!run.stdout.contains("proxy: false"), "{}", run.stdout);
    }
}
