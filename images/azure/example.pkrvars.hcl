# Copy to my.pkrvars.hcl and adjust; credentials: $ARM_* or the Azure CLI login.
resource_group = "ri-images"
location       = "westeurope"
image_name     = "resinfra"
# gallery      = "resinfra_images"
