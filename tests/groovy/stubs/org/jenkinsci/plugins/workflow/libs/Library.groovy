package org.jenkinsci.plugins.workflow.libs

import java.lang.annotation.Retention
import java.lang.annotation.RetentionPolicy

/** `@Library('name@version') _` in a Jenkinsfile; the harness has loaded the library already. */
@Retention(RetentionPolicy.SOURCE)
@interface Library {
    String[] value()
}
