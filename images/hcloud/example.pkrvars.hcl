# Copy to my.pkrvars.hcl and adjust; the token comes from $HCLOUD_TOKEN.
location    = "nbg1"
server_type = "cx23"
image_name  = "resinfra"
