"""The built-in `docker-rest` packager: a small model image serving `legion-ci serve`.

requirements  what goes into the image: the server's part of legion-ci plus the model's pins
wheelhouse    those requirements as wheels on the agent (cached), and legion-ci's own wheel
dockerfile    the Dockerfile, rendered from templates/Dockerfile.in
context       the build context folder a person can read and `docker build` by hand
engine        build (log streamed), smoke test and push (digest proven) through the Docker SDK
docker_rest   DockerRestPackager: the order of the above, and the stage's outputs
"""
