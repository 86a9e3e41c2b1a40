-- wrk script: POST the classic /predict body.
wrk.method = "POST"
wrk.body = '{"features":[5.1,3.5,1.4,0.2]}'
wrk.headers["Content-Type"] = "application/json"
