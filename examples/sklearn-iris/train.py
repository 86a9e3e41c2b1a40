# The tutorial's training step, exactly: a scikit-learn LogisticRegression on iris, saved with
# joblib as model.pkl. Then: kubectl create configmap iris-sklearn --from-file=model.pkl
#                            kubectl apply -f examples/sklearn-iris/mlmodel.yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
import joblib

X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=200)
model.fit(X, y)
joblib.dump(model, "model.pkl")
