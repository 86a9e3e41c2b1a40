"""The common tutorial approach, as written in countless blog posts: Flask + joblib + scikit-learn."""
import os

import joblib
from flask import Flask, jsonify, request

app = Flask(__name__)
model = joblib.load(os.environ.get("MODEL_PKL", "model.pkl"))


@app.route("/predict", methods=["POST"])
def predict():
    features = request.get_json()["features"]
    prediction = model.predict([features])
    return jsonify({"prediction": prediction.tolist()})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
