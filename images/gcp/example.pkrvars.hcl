# Copy to my.pkrvars.hcl and adjust; credentials: gcloud auth application-default login.
project_id = "resinfra-dev"
zone       = "europe-west3-a"
image_name = "resinfra"
