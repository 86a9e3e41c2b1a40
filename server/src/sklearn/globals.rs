//! The allowlist of globals a pickle may name. Each entry says what the reader does with it
//! (it never imports or calls anything); every other name is refused when the opcode is read.

/// What an allowlisted global stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `numpy.core.multiarray._reconstruct(ndarray, shape, typecode)`: an empty array that BUILD fills.
    Reconstruct,
    /// `numpy.ndarray`, only as an argument of `_reconstruct` or a joblib wrapper.
    NdArray,
    /// `numpy.dtype(str, align, copy)`: a dtype that BUILD completes.
    Dtype,
    /// `numpy.core.multiarray.scalar(dtype, bytes)`: a numpy scalar.
    Scalar,
    /// `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)`: protocol 5 arrays.
    FromBuffer,
    /// `_codecs.encode(str, "latin1")`: how protocol 2 writes bytes.
    CodecsEncode,
    /// `copyreg._reconstructor(cls, object, None)`: an empty object of `cls`.
    CopyregReconstructor,
    /// `builtins.object`, only as an argument of `copyreg._reconstructor`.
    Object,
    /// `builtins.bytearray(bytes)`.
    ByteArray,
    /// `builtins.set(list)` / `builtins.frozenset(list)`.
    Set,
    /// joblib's `NumpyArrayWrapper`: an array whose bytes follow in the file.
    NumpyArrayWrapper,
    /// A scikit-learn class (an estimator, a tree, a loss); the name is the class name.
    Class(&'static str),
}

/// Estimator classes that can be served, by module and name.
pub const ESTIMATORS: &[(&str, &str)] = &[
    ("sklearn.linear_model._logistic", "LogisticRegression"),
    ("sklearn.linear_model._base", "LinearRegression"),
    ("sklearn.linear_model._ridge", "Ridge"),
    ("sklearn.linear_model._coordinate_descent", "Lasso"),
    ("sklearn.linear_model._coordinate_descent", "ElasticNet"),
    ("sklearn.linear_model._stochastic_gradient", "SGDClassifier"),
    ("sklearn.linear_model._stochastic_gradient", "SGDRegressor"),
    ("sklearn.tree._classes", "DecisionTreeClassifier"),
    ("sklearn.tree._classes", "DecisionTreeRegressor"),
    ("sklearn.ensemble._forest", "RandomForestClassifier"),
    ("sklearn.ensemble._forest", "RandomForestRegressor"),
    ("sklearn.ensemble._forest", "ExtraTreesClassifier"),
    ("sklearn.ensemble._forest", "ExtraTreesRegressor"),
    ("sklearn.ensemble._gb", "GradientBoostingClassifier"),
    ("sklearn.ensemble._gb", "GradientBoostingRegressor"),
    ("sklearn.ensemble._hist_gradient_boosting.gradient_boosting", "HistGradientBoostingClassifier"),
    ("sklearn.ensemble._hist_gradient_boosting.gradient_boosting", "HistGradientBoostingRegressor"),
    ("sklearn.preprocessing._data", "StandardScaler"),
    ("sklearn.preprocessing._data", "MinMaxScaler"),
    ("sklearn.preprocessing._data", "MaxAbsScaler"),
    ("sklearn.preprocessing._data", "RobustScaler"),
    ("sklearn.impute._base", "SimpleImputer"),
    ("sklearn.pipeline", "Pipeline"),
];

/// Classes that only appear inside a supported estimator (its trees, its loss object), read as
/// plain data.
const PARTS: &[(&str, &str)] = &[
    ("sklearn.tree._tree", "Tree"),
    // The base estimators of ExtraTrees.
    ("sklearn.tree._classes", "ExtraTreeClassifier"),
    ("sklearn.tree._classes", "ExtraTreeRegressor"),
    // SGD keeps its loss object; the reader ignores it (the `loss` parameter says which it is).
    ("sklearn.linear_model._sgd_fast", "Hinge"),
    ("sklearn.linear_model._sgd_fast", "SquaredHinge"),
    ("sklearn.linear_model._sgd_fast", "ModifiedHuber"),
    ("sklearn.linear_model._sgd_fast", "Log"),
    ("sklearn.linear_model._sgd_fast", "SquaredLoss"),
    ("sklearn.linear_model._sgd_fast", "Huber"),
    ("sklearn.linear_model._sgd_fast", "EpsilonInsensitive"),
    ("sklearn.linear_model._sgd_fast", "SquaredEpsilonInsensitive"),
    // Boosting: the init estimator, HistGradientBoosting's trees and binning, the label encoder.
    ("sklearn.dummy", "DummyClassifier"),
    ("sklearn.dummy", "DummyRegressor"),
    ("sklearn.ensemble._hist_gradient_boosting.predictor", "TreePredictor"),
    ("sklearn.ensemble._hist_gradient_boosting.binning", "_BinMapper"),
    ("sklearn.preprocessing._label", "LabelEncoder"),
    // The loss objects and their links (the link decides how raw predictions become outputs).
    ("sklearn._loss.link", "IdentityLink"),
    ("sklearn._loss.link", "LogLink"),
    ("sklearn._loss.link", "LogitLink"),
    ("sklearn._loss.link", "HalfLogitLink"),
    ("sklearn._loss.link", "MultinomialLogit"),
    ("sklearn._loss.link", "Interval"),
    // Random generators estimators keep (`_rng`, `_feature_subsample_rng`): kept as inert data.
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
];

/// Loss classes, in `sklearn._loss.loss` and (Cython) `sklearn._loss._loss`, kept as inert data.
const LOSSES: &[&str] = &[
    "HalfBinomialLoss",
    "HalfMultinomialLoss",
    "HalfSquaredError",
    "AbsoluteError",
    "PinballLoss",
    "HuberLoss",
    "HalfPoissonLoss",
    "HalfGammaLoss",
    "HalfTweedieLoss",
    "HalfTweedieLossIdentity",
    "ExponentialLoss",
];

/// A loss class: `sklearn._loss.loss.X`, or its Cython twin `CyX` (module `sklearn._loss._loss`, or
/// `_loss` in scikit-learn 1.5) and the `__pyx_unpickle_CyX` function Cython pickles it with.
fn loss_class(module: &str, name: &str) -> Option<&'static str> {
    let cython = name.strip_prefix("__pyx_unpickle_").unwrap_or(name);
    let found = match module {
        "sklearn._loss.loss" => LOSSES.iter().find(|l| **l == name),
        "sklearn._loss._loss" | "_loss" => {
            LOSSES.iter().find(|l| cython.strip_prefix("Cy").is_some_and(|rest| rest == **l))
        }
        _ => None,
    }?;
    Some(found)
}

/// Looks `module.name` up in the allowlist.
pub fn lookup(module: &str, name: &str) -> Option<Global> {
    let numpy_core = |m: &str, sub: &str| {
        m.strip_prefix("numpy.core.").or_else(|| m.strip_prefix("numpy._core.")).is_some_and(|rest| rest == sub)
    };
    let g = match (module, name) {
        (m, "_reconstruct") if numpy_core(m, "multiarray") => Global::Reconstruct,
        (m, "scalar") if numpy_core(m, "multiarray") => Global::Scalar,
        (m, "_frombuffer") if numpy_core(m, "numeric") => Global::FromBuffer,
        ("numpy", "ndarray") => Global::NdArray,
        ("numpy", "dtype") => Global::Dtype,
        ("_codecs", "encode") => Global::CodecsEncode,
        ("copyreg" | "copy_reg", "_reconstructor") => Global::CopyregReconstructor,
        ("builtins" | "__builtin__", "object") => Global::Object,
        ("builtins" | "__builtin__", "bytearray" | "bytes") => Global::ByteArray,
        ("builtins" | "__builtin__", "set" | "frozenset") => Global::Set,
        ("joblib.numpy_pickle", "NumpyArrayWrapper") => Global::NumpyArrayWrapper,
        _ => match ESTIMATORS.iter().chain(PARTS).find(|(m, n)| *m == module && *n == name) {
            Some((_, n)) => Global::Class(n),
            None => Global::Class(loss_class(module, name)?),
        },
    };
    Some(g)
}

/// Whether `class` is a servable estimator (as opposed to a part of one).
pub fn is_estimator(class: &str) -> bool {
    ESTIMATORS.iter().any(|(_, n)| *n == class)
}

/// The supported estimators, for error messages.
pub fn supported_list() -> String {
    ESTIMATORS.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist() {
        assert_eq!(lookup("numpy.core.multiarray", "_reconstruct"), Some(Global::Reconstruct));
        assert_eq!(lookup("numpy._core.multiarray", "scalar"), Some(Global::Scalar));
        assert_eq!(lookup("numpy._core.numeric", "_frombuffer"), Some(Global::FromBuffer));
        assert_eq!(lookup("numpy.core.multiarray.x", "_reconstruct"), None);
        assert_eq!(lookup("sklearn.pipeline", "Pipeline"), Some(Global::Class("Pipeline")));
        assert_eq!(lookup("posix", "system"), None);
        assert_eq!(lookup("builtins", "eval"), None);
        assert!(supported_list().contains("LogisticRegression"));
    }
}
