"""The built-in `docker-rest` packager: a small model image serving `legion-ci serve`.

requirements  what goes into the image: the server's part of legion-ci plus the model's pins
wheelhouse    those requirements as wheels on the agent (cached), and legion-ci's own wheel
dockerfile    the Dockerfile, rendered from templates/Dockerfile.in
slim_venv     run inside the image build: the packages' own test suites left out
context       the build context folder a person can read and `docker build` by hand
build         the base image and the build (log streamed) through the Docker SDK
image_smoke   the built image run, made ready and invoked with the binary's example
push          the push, and the digest pulled back and proven
docker_rest   DockerRestPackager: the order of the above, and the stage's outputs
"""
