//! Checks of the spec that neither the CRD schema nor the API server turn into a useful error:
//! a malformed quantity in `spec.server.resources` makes the API server fail the Deployment
//! apply with a 500 (it cannot convert the object), which looks transient but never passes.

use modelship_crds::MLModel;

use crate::error::Error;

/// `Err(Error::InvalidSpec)` naming the first field the API server would not accept.
pub fn spec(model: &MLModel) -> Result<(), Error> {
    let Some(resources) = model.spec.server.as_ref().and_then(|s| s.resources.as_ref()) else {
        return Ok(());
    };
    let lists = [("requests", resources.requests.as_ref()), ("limits", resources.limits.as_ref())];
    for (list, values) in lists {
        for (resource, q) in values.into_iter().flatten() {
            if !is_quantity(&q.0) {
                return Err(Error::InvalidSpec {
                    field: format!("spec.server.resources.{list}.{resource}"),
                    message: format!("{:?} is not a quantity (such as 100m, 64Mi, 1.5 or 2e3)", q.0),
                });
            }
        }
    }
    Ok(())
}

/// Whether `s` has the syntax of a Kubernetes quantity: a signed decimal number and an optional
/// binary-SI (`Ki`..`Ei`), decimal-SI (`n`..`E`) or exponent (`e3`, `E-2`) suffix.
pub fn is_quantity(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let end = unsigned.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(end);
    let number_ok = number.bytes().any(|b| b.is_ascii_digit()) && number.matches('.').count() <= 1;
    const SI: &[&str] = &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"];
    let exponent = || {
        let digits = suffix.strip_prefix(['e', 'E']).map(|e| e.strip_prefix(['+', '-']).unwrap_or(e));
        digits.is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    };
    number_ok && (SI.contains(&suffix) || exponent())
}
